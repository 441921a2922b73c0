"""How large each part of a streaming upload is: small first parts, then the chunk size, doubled every
few hundred parts; or, when the writer is told about how large the object will be, equal parts that
upload at once.

A streaming writer does not know the object's size in advance. Two rules follow:

- **Start small, so a small object uploads while it is still being written.** Part 1 is S3's smallest
  part (5 MiB) and each next part doubles until the chunk size (5, 10, 20, 40, then 64 MiB at the
  default chunk), so a 16 MiB checkpoint is three parts, the first of them sent while ``torch.save``
  is still writing the rest, instead of one PUT that waits for the last byte. An object smaller than
  one 5 MiB part is still a single PUT.
- **Grow late, so no object runs out of parts.** S3 allows at most :data:`~s3_utils.limits.MAX_PARTS`
  parts: parts 1 to :data:`PARTS_PER_DOUBLING` are at most the configured chunk size, the next
  :data:`PARTS_PER_DOUBLING` twice that, and so on, never above S3's largest part. Objects below
  ``PARTS_PER_DOUBLING * chunk_size`` (56 GiB at the default 64 MiB) are not affected; and for every
  allowed chunk size, even S3's smallest part, 10,000 parts hold at least S3's largest object (5 TiB).

Why 900 and not 1,000: doubling every 1,000 parts from 5 MiB reaches only 4.88 TiB by part 10,000.

**When the size is known in advance** (bytes in memory, a file, a checkpoint whose tensor bytes are
counted before ``torch.save`` runs), the ramp wastes time: its parts of 5 and 10 MiB for a 16 MiB object
upload side by side but the 10 MiB one finishes last, so the object takes as long as a 10 MiB PUT.
:func:`planned_part_size` splits such an object into equal parts instead: measured on SeaweedFS over
loopback, 16 MiB written in 1 MiB pieces took 97 ms in three equal parts against 125 ms with the
5 + 10 + 1 MiB ramp. A large object gets :data:`PARTS_PER_SLOT` parts per upload slot rather than one,
so sent parts' buffers are refilled instead of the whole object being faulted into fresh memory, and
the last part, sent after the last byte is written, is short. The doubling every
:data:`PARTS_PER_DOUBLING` parts applies to planned parts too, and a planned part is never below 5 MiB,
so the 5 TiB guarantee holds however wrong the estimate.
"""

from __future__ import annotations

from s3_utils.limits import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, MiB

PARTS_PER_DOUBLING = 900
"""How many parts keep one size before the size doubles."""

PARTS_PER_SLOT = 2
"""How many planned parts an upload makes per part in flight (``max_concurrency``), size permitting.

With one part per slot (the rule until 2026-12-07) a 512 MiB checkpoint was 10 parts of 52 MiB: every
part took a fresh buffer, so a save faulted the whole checkpoint into new memory, and the last 52 MiB
began to upload only after ``torch.save`` had written them. Measured on this project's 2-core host
(512 MiB written in 16 MiB pieces to SeaweedFS on loopback, 10 in flight, variants in shuffled order,
4 to 6 saves each): 52 MiB parts 3.3 to 4.8 s and 0.5 to 1.7 s of client CPU per save; 32 MiB parts
2.8 to 3.9 s; 16 MiB parts 2.5 to 3.9 s and 0.3 to 0.8 s of CPU, the same as 8 MiB parts. In
``./bench/run`` (512 MiB, two runs each, alternating) two and three parts per slot were level
(sync 0.88x and 0.95x, against 0.88x and 1.07x s3torchconnector; one per slot 0.71x and 0.81x); two
costs fewer requests (22 per 512 MiB, not 32; at 1 GiB 22, not 30), which count where many ranks
share S3's request rate (docs/tuning.md).
"""


def planned_part_size(chunk_size: int, expected_size: int, max_concurrency: int) -> int:
    """The part size for an object expected to be about ``expected_size`` bytes.

    The object is split evenly into :data:`PARTS_PER_SLOT` parts per upload slot (at most
    ``PARTS_PER_SLOT * max_concurrency`` parts, none below S3's 5 MiB), with 1 % + 1 MiB of slack so an
    object slightly larger than expected takes no extra part; never above ``chunk_size``. An object
    that fits one such part is a single PUT.

    Args:
        chunk_size: the configured part size, in bytes (5 MiB to 5 GiB).
        expected_size: about how many bytes the object will have (an estimate is fine).
        max_concurrency: how many parts upload at once.

    Returns:
        The size in bytes of every part (before the growth every :data:`PARTS_PER_DOUBLING` parts).
    """
    parts = max(1, min(PARTS_PER_SLOT * max_concurrency, expected_size // MIN_PART_SIZE))
    padded = expected_size + expected_size // 100 + MiB
    return max(MIN_PART_SIZE, min(chunk_size, -(-padded // parts)))


def part_size(chunk_size: int, part_number: int, planned: int | None = None) -> int:
    """The size in bytes of part ``part_number`` (1-based) of a streaming upload.

    Args:
        chunk_size: the configured part size, in bytes (5 MiB to 5 GiB).
        part_number: which part, from 1 to :data:`~s3_utils.limits.MAX_PARTS`.
        planned: the :func:`planned_part_size` of an upload whose size is known roughly in advance;
            None for the ramp.

    Returns:
        ``planned``, or without it ``min(chunk_size, 5 MiB * 2 ** (part_number - 1))`` (the ramp),
        times ``2 ** ((part_number - 1) // PARTS_PER_DOUBLING)``, at most S3's largest part.

    Raises:
        ValueError: if ``part_number`` is outside 1 to 10,000.
    """
    if not 1 <= part_number <= MAX_PARTS:
        raise ValueError(f"part_number={part_number} is outside S3's 1 to {MAX_PARTS}")
    if planned is not None:
        ramp = planned
    else:
        ramp = chunk_size if part_number > 32 else min(chunk_size, MIN_PART_SIZE << (part_number - 1))
    doublings = (part_number - 1) // PARTS_PER_DOUBLING
    if ramp << doublings >= MAX_PART_SIZE:
        return MAX_PART_SIZE
    return ramp << doublings
