//! engram-postgres: scale-out back-end (in progress).
