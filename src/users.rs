//! The host's users and groups as the daemon needs them: which group may use the admin
//! socket. A leaf, so the daemon's wiring, the peer check and the doctor share one lookup.

/// Looks a group up by name (or numeric id) in the system's group database.
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    // getgrnam_r underneath: getgrnam's static buffer is not safe with other threads.
    nix::unistd::Group::from_name(name).ok().flatten().map(|g| g.gid.as_raw())
}
