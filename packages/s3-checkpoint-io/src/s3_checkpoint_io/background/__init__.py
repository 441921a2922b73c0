"""Asynchronous single-file saves: snapshot, host buffers, the upload helper process, ordered saves.

The data flows in this order: :mod:`~.snapshot` copies the state into host buffers
(:mod:`~.host_buffers`, shared-memory slabs); :mod:`~.upload_process` hands the snapshot to the upload
helper process (:mod:`~.upload_helper`, over :mod:`~.wire`), which serializes it and writes it to S3
with :func:`~s3_checkpoint_io.engine.write_checkpoint`; :mod:`~.ordered_saves` runs saves and removals
one after another off the training thread, with bounded pending saves.

Imports torch and s3_utils only (no Lightning); each module is imported by name.
"""
