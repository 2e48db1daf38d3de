//! The two ways a worker runs: [`standalone`] (connectors from files, offsets in a local file)
//! and [`distributed`] (assignments from the controller under a lease), plus [`admin`], the
//! offset requests the controller hands to a distributed worker.

pub mod admin;
pub mod distributed;
pub mod standalone;
