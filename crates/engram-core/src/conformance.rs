//! Store conformance suite: the same cases run against every `Store` implementation.
