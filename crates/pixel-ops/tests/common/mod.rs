//! Shared by the property tests: a proptest run that counts how many generated cases the operation
//! under test accepted, so a property of the form "if it succeeds, then ..." can also assert that
//! enough cases succeeded for the "then" to have been checked.

use std::cell::Cell;
use std::fmt::Debug;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Runs `property` on `cases` inputs drawn from `strategy` (shrinking and panicking on a failure,
/// as `proptest!` does) and returns how many inputs it reported as accepted (`Ok(true)`).
pub fn count_accepted<S>(
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> u32
where
    S: Strategy,
    S::Value: Debug,
{
    let accepted = Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |value| {
        if property(value)? {
            accepted.set(accepted.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    accepted.get()
}
