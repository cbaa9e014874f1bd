"""The PySide6 desktop app: views over the core library and worker threads that relay its progress.

Nothing in :mod:`endoshare` outside this package imports Qt; the modules ``frames`` and ``staging``
here are plain Python too, so that they can be tested and reused without a display.
"""
