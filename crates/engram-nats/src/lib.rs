//! engram-nats: scale-out back-end (in progress).
