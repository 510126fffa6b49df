//! contexten-git against real git processes, temporary folders and loopback
//! servers only.

mod fetch;
mod helpers;
mod read;
