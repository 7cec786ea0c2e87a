//! Rows as they are stored (`Queryable`) and rows to insert (`Insertable`), one file per table.
//!
//! Models are plain data: the `state` column is kept as the stored string, so a row with a value this
//! version does not know can still be loaded and remediated. [`crate::state::HasApplyState`] turns it
//! into an [`ApplyState`](crate::state::ApplyState), and the store checks every row it returns.
//! Timestamps are UTC.

mod apply;
mod apply_operation;
mod control_request;
mod task;

pub use apply::{Apply, NewApply};
pub use apply_operation::{ApplyOperation, NewApplyOperation};
pub use control_request::ControlRequest;
pub use task::{NewTask, Task};
