use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

/// Ports never handed out although the OS may offer them: the machine's own
/// RabbitMQ (AMQP, distribution, management), epmd, Redis, and the range the
/// RabbitMQ CLI tools bind for their own distribution (35672-35682).
fn reserved(port: u16) -> bool {
    matches!(
        port,
        4369 | 5671 | 5672 | 6379 | 15672 | 25672 | 35672..=35682
    )
}

/// A loopback TCP port that nothing listens on now and that this process has
/// not handed out before (two nodes started together never get the same one).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind a loopback port");
        if !reserved(port) && given.insert(port) {
            return port;
        }
    }
}
