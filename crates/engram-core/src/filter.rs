//! Metadata filter language (placeholder, replaced below).
use crate::types::DocAttrs;
#[derive(Debug, Clone, PartialEq)]
pub enum Filter { All }
impl Filter {
    pub fn matches(&self, _a: &DocAttrs) -> bool { true }
}
