//! Rows as they are stored (`Queryable`) and rows to insert (`Insertable`), one file per table.
//!
//! Models are plain data: the `state` column is kept as the stored string, so a row with a value this
//! version does not know can still be loaded and remediated. [`crate::state::HasApplyState`] turns it
//! into an [`ApplyState`](crate::state::ApplyState), and the store checks every row it returns.
//! Timestamps are UTC; serialised (serde), they are RFC 3339 with a `Z`, such as
//! `2026-11-25T13:04:05.123456Z`, and deserialising accepts any RFC 3339 offset.

mod apply;
mod apply_operation;
mod control_request;
mod rfc3339;
mod task;

pub use apply::{Apply, NewApply};
pub use apply_operation::{ApplyOperation, NewApplyOperation};
pub use control_request::ControlRequest;
pub use task::{NewTask, Task};
