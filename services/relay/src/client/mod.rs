//! The client side of SMTP as the relay speaks it, without I/O: parsing the replies a remote
//! server sends, reading its EHLO capabilities, and preparing a message for DATA. Every function
//! here works on byte slices, so the connection code owns all the waiting and the tests and fuzz
//! targets can drive the codec without a network.

pub mod dot;
pub mod ehlo;
pub mod reply;

pub use dot::{dot_stuff, header_needs_smtputf8, needs_8bit};
pub use ehlo::Capabilities;
pub use reply::{MAX_LINE_LEN, MAX_REPLY_LEN, MAX_REPLY_LINES, Reply, ReplyError, parse_reply};
