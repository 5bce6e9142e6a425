//! One module per subcommand; each owns its arguments and its `execute`.

pub mod compile;
pub mod gc;
pub mod init;
pub mod key;
pub mod policy_arg;
pub mod report;
pub mod result;
pub mod run;
pub mod schema;
pub mod starter;
pub mod validate;
