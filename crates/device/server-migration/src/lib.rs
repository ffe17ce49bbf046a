//! The `server-migration` Mender Update Module: switches a device's mender.conf between servers, crash-safe, with rollback.
//!
//! Installed as `/usr/share/mender/modules/v3/server-migration`. The config rules (parse, stage
//! precondition, rendering, validation) are `menderconf`'s; this crate owns the protocol
//! ([`protocol`]), the journal ([`journal`]), the durable file transaction ([`transaction`],
//! [`atomic`]), the device root prefix ([`device`]), crash injection for tests ([`faults`]),
//! the client generation on the device ([`client`]), the deferred client restart ([`restart`]),
//! whole-line diagnostics ([`diag`]) and the inventory attributes ([`inventory`]).

pub mod atomic;
pub mod cli;
pub mod client;
pub mod device;
pub mod diag;
pub mod error;
pub mod faults;
pub mod inventory;
pub mod journal;
pub mod payload;
pub mod protocol;
pub mod restart;
pub mod transaction;
