"""The pure core: errors, data, model values, cron, the due-heap, mergers, ids, the work
record and the lifecycle. Nothing here does I/O, reads a clock or imports anyio."""
