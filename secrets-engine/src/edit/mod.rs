//! Edits of the project's deploy files (compose and stack files), made as
//! text so that the operator's comments and layout survive, and checked by
//! parsing the result before it is written.

pub mod compose;
pub mod stackfile;
