//! One module per subcommand; each owns its arguments and its `execute`.

pub mod compile;
pub mod gc;
pub mod init;
pub mod key;
pub mod log;
pub mod report;
pub mod run;
pub mod schema;
pub mod validate;
