//! One module per subcommand; each owns its arguments and its `execute`.

pub mod artifact;
pub mod compile;
pub mod gc;
pub mod host;
pub mod init;
pub mod key;
pub mod log;
pub mod mcp;
pub mod policy_arg;
pub mod pool_run;
pub mod prune;
pub mod report;
pub mod report_target;
pub mod result;
pub mod run;
pub mod schema;
pub mod serve;
pub mod starter;
pub mod token;
pub mod validate;
