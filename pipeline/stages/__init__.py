"""Stage entry points: orchestration and file I/O around the pure transforms."""
