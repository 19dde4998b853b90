//! Several active nodes on one Redis. Membership (`membership`) gives every node the same slot
//! table (`ownership`); an action for a slot owned elsewhere is forwarded to its owner
//! (`forward`, received by `http::internal`), and a stream opened on a node that does not own the
//! user is fed from the owner's (`remote_stream`). Without `--cluster` none of this runs.

pub mod forward;
pub mod membership;
pub mod ownership;
pub mod remote_stream;

pub use membership::{Membership, Role, Route};
pub use ownership::{Member, Ownership};
