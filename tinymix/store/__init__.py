"""What tinymix keeps on disk, and how: never a pickle, never a half-written file.

    files.py        atomic, durable writes (one file mode for all), a lock per folder, file hashes
    checkpoint.py   arrays as safetensors, settings as JSON
    assets.py       pinned, checksum-verified downloads, read straight out of their archives
"""
