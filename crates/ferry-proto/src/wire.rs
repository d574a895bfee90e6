//! Status codes on the wire. The guest maps each domain error to one code on
//! purpose (see ferry-guest's `error.rs`); the host reads the code back to
//! decide between retrying, resyncing and giving up.
pub use ttrpc::Code;

/// A ttRPC error carrying `code` and a human message.
pub fn status(code: Code, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

/// The status code of a failed call, if the peer sent one (transport errors
/// have none).
pub fn code_of(err: &ttrpc::Error) -> Option<Code> {
    match err {
        ttrpc::Error::RpcStatus(s) => Some(s.code()),
        _ => None,
    }
}

/// The peer's message of a failed call, or the transport error's text.
pub fn message_of(err: &ttrpc::Error) -> String {
    match err {
        ttrpc::Error::RpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    }
}
