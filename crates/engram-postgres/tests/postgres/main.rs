//! engram-postgres against a real PostgreSQL 17 + pgvector 0.8 (started by
//! `scripts/services.sh`; `ENGRAM_TEST_PG_URL` overrides the address). Every
//! test makes its own database. One test binary: the store (conformance suite
//! and PostgreSQL-specific checks), the filter translation, the indexes.

mod common;
mod filter_sql;
mod indexes;
mod store;
