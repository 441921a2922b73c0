"""Which "previous" checkpoint a ModelCheckpoint on S3 may delete: the one rule both callbacks use.

Lightning (and NeMo, which seeds ``last_model_path`` with the resume path) deletes any non-local
"previous" top-k or last checkpoint, including the checkpoint the run resumed from or one in another
run's directory (Lightning #21813). ``S3ModelCheckpoint`` and NeMo's ``S3NeMoModelCheckpoint`` both
decide with :func:`may_remove_checkpoint`.
"""

from __future__ import annotations

import logging
import os

from s3_dirpath_utils import is_s3_url, normalize_s3_url

log = logging.getLogger(__name__)


def may_remove_checkpoint(
    previous: str, current: str, *, dirpath: str, resumed_from: str | os.PathLike[str] | None
) -> bool:
    """Whether the callback may delete ``previous`` now that ``current`` is saved.

    It may only when ``previous`` is another ``s3://`` object under the callback's own ``dirpath`` and is
    not the checkpoint training resumed from (``trainer.ckpt_path``), which stays, as on local disk.

    Args:
        previous: the checkpoint about to be replaced.
        current: the checkpoint just saved.
        dirpath: the callback's ``s3://`` dirpath.
        resumed_from: the checkpoint this run resumed from, if any.

    Returns:
        True to delete ``previous``.
    """
    if previous == current:
        return False
    if not is_s3_url(previous):
        log.warning("not removing %s: it is not an s3:// checkpoint under %s", previous, dirpath)
        return False
    previous_url = normalize_s3_url(previous)
    if not previous_url.startswith(normalize_s3_url(dirpath).rstrip("/") + "/"):
        log.warning("not removing %s: it is outside this callback's dirpath %s", previous_url, dirpath)
        return False
    resumed = None if resumed_from is None else str(resumed_from)
    if resumed is not None and is_s3_url(resumed) and normalize_s3_url(resumed) == previous_url:
        log.info("not removing %s: training resumed from it", previous_url)
        return False
    return True
