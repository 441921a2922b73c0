"""Background saves: the ordered-saves engine, and the asynchronous single-file save it runs.

:mod:`~.ordered_saves` is the one engine for every background save: it runs saves and the removals
(or copies) behind them one after another off the training thread, with bounded pending saves; the
single-file plugin runs its saves on it, the sharded strategies track their ``dcp.async_save`` saves
there (:mod:`s3_checkpoint_io.strategies.async_saves`). :mod:`~.before_exit` lets it finish pending
saves at interpreter exit, :mod:`~.fork` lets it start empty in a forked child.

An asynchronous single-file save flows in this order: :mod:`~.snapshot` copies the state into host
buffers (:mod:`~.host_buffers`, shared-memory slabs); :mod:`~.snapshot_writer` serializes it and
streams its parts to S3, by handing it to the upload helper process (:mod:`~.upload_process`, which
talks to :mod:`~.upload_helper` over :mod:`~.wire`) or, where that cannot be used, with
:func:`~s3_checkpoint_io.engine.write_checkpoint` on the engine's worker thread.

Imports torch and s3_utils only (no Lightning); each module is imported by name.
"""
