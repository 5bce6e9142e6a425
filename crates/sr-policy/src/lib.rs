//! PolicySpec v1: model, parsing (YAML and JSON), validation, and the operator config.
#![forbid(unsafe_code)]

pub mod model;
pub mod operator;

pub use model::PolicySpec;
pub use operator::OperatorConfig;
