//! The protocol rules of a connection, apart from I/O: plain functions and data that take
//! packets, the capabilities and the time, and return decisions (a refusal code, a CONNACK, a
//! deadline). The async driver in `connection/` does the reading, writing and waiting; these
//! modules are tested without sockets or sleeps.

pub(crate) mod connect;
pub(crate) mod encode;
pub(crate) mod keep_alive;
pub(crate) mod publish;
