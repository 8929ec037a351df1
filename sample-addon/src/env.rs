//! Reading the environment the same way for the contract's variables and the knobs: an empty
//! value counts as unset, numbers are bounded, and an error names the variable.

/// The environment, read through a lookup function so that tests need not touch the process's.
pub struct Env<'a> {
    /// Looks a variable up; `None` when unset.
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    /// Read through `lookup` (`std::env::var` in the binary, a map in tests).
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Env { lookup }
    }

    /// The value, `None` when unset or empty.
    pub fn get(&self, k: &str) -> Option<String> {
        (self.lookup)(k).filter(|v| !v.is_empty())
    }

    /// An integer between 0 and `max`; anything else is an error naming the variable.
    pub fn num(&self, k: &str, max: u64) -> Result<Option<u64>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n <= max => Ok(Some(n)),
                _ => Err(format!("{k}={v:?} is not an integer between 0 and {max}")),
            },
        }
    }

    /// On for `1`, `true`, `yes` or `on`; off otherwise.
    pub fn flag(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
    }
}
