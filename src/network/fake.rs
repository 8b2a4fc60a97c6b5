//! A recording fake [`PolicyBackend`] for unit tests (test builds only):
//! it records every call, keeps the rules in force like a backend would
//! (guard adds a port and the shared part, release removes the port), can
//! be told to fail any operation, and can have its rules flushed behind
//! cci's back. Enforces nothing; never runs anything.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use super::backend::{PolicyBackend, State};
use super::rules::PortRules;
use super::{Error, Mode, PortName};

/// One call the fake received (or, through [`Log`], one daemon step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `guard` of a port in a mode.
    Guard(PortName, Mode),
    /// `refill` of a port.
    Refill(PortName),
    /// `release` of a port.
    Release(PortName),
    /// `restore_shared`.
    RestoreShared,
    /// `state`.
    State,
    /// A daemon step recorded by a test's fake daemon, e.g. "create web-1".
    Daemon(String),
}

/// Which operation to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Guard,
    Refill,
    Release,
    RestoreShared,
    State,
}

/// Calls in order, shareable with a fake daemon so both sides interleave.
pub type Log = Arc<Mutex<Vec<Call>>>;

#[derive(Debug, Default)]
pub struct FakeBackend {
    pub log: Log,
    state: Mutex<State>,
    failing: Mutex<BTreeSet<Op>>,
}

impl FakeBackend {
    /// A backend with nothing in force.
    pub fn new() -> FakeBackend {
        FakeBackend::default()
    }

    /// One that enforces `ports` already (the shared part in place).
    pub fn with_ports(ports: &[&PortName]) -> FakeBackend {
        let fake = FakeBackend::new();
        {
            let mut s = fake.state.lock().unwrap();
            s.tables = true;
            for p in ports {
                s.ports.insert((*p).clone(), 0);
            }
        }
        fake
    }

    /// Make `op` fail from now on.
    pub fn fail(&self, op: Op) {
        self.failing.lock().unwrap().insert(op);
    }

    /// Everything vanishes behind cci's back (`nft flush ruleset`).
    pub fn flush(&self) {
        *self.state.lock().unwrap() = State::default();
    }

    /// Only the shared part vanishes (cci's inet table deleted).
    pub fn drop_shared(&self) {
        self.state.lock().unwrap().tables = false;
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.log.lock().unwrap().clone()
    }

    /// The ports in force.
    pub fn ports(&self) -> Vec<PortName> {
        self.state.lock().unwrap().ports.keys().cloned().collect()
    }

    fn call(&self, call: Call, op: Op) -> Result<(), Error> {
        self.log.lock().unwrap().push(call);
        if self.failing.lock().unwrap().contains(&op) {
            return Err(Error::Nft(format!("{op:?} failed (fake)")));
        }
        Ok(())
    }
}

impl PolicyBackend for FakeBackend {
    fn guard(&self, r: &PortRules) -> Result<(), Error> {
        self.call(Call::Guard(r.port.clone(), r.mode), Op::Guard)?;
        let mut s = self.state.lock().unwrap();
        s.tables = true;
        s.ports.insert(r.port.clone(), 0);
        Ok(())
    }

    fn refill(&self, r: &PortRules) -> Result<(), Error> {
        self.call(Call::Refill(r.port.clone()), Op::Refill)
    }

    fn release(&self, port: &PortName) -> Result<(), Error> {
        self.call(Call::Release(port.clone()), Op::Release)?;
        self.state.lock().unwrap().ports.remove(port);
        Ok(())
    }

    fn restore_shared(&self) -> Result<(), Error> {
        self.call(Call::RestoreShared, Op::RestoreShared)?;
        self.state.lock().unwrap().tables = true;
        Ok(())
    }

    fn state(&self) -> Result<State, Error> {
        self.call(Call::State, Op::State)?;
        Ok(self.state.lock().unwrap().clone())
    }
}
