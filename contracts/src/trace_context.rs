//! W3C Trace Context (`traceparent`, `tracestate`) syntax, as CloudEvents' distributed tracing
//! extension carries it.
//!
//! Both attributes arrive from the network and are echoed into our replies and into NATS
//! headers, where a line break is not just wrong but breaks the protocol; so they are checked
//! against the W3C grammar (<https://www.w3.org/TR/trace-context/>) before anything uses them,
//! and a value that fails is dropped rather than repaired (the trace it names is unknowable).

/// Longest `tracestate` accepted: 32 members of the W3C maximum size would be 8 KiB, but
/// vendors are told to keep the header under 512 bytes, and it is copied into every reply.
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// Most `tracestate` members the W3C grammar allows.
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// Whether `value` is a `traceparent` of a version this reader understands.
///
/// Version `00` is exactly `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, in lower
/// case, with neither id all zeros. A later version (not `ff`) must start the same way and may
/// add fields after a further `-`, as the specification tells version-00 readers to accept.
pub fn is_valid_traceparent(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return false;
    }
    let (head, rest) = bytes.split_at(55);
    let version = &head[0..2];
    let well_formed = is_lower_hex(version)
        && head[2] == b'-'
        && is_lower_hex(&head[3..35])
        && head[35] == b'-'
        && is_lower_hex(&head[36..52])
        && head[52] == b'-'
        && is_lower_hex(&head[53..55]);
    if !well_formed || version == b"ff" {
        return false;
    }
    let ids_set = head[3..35].iter().any(|&b| b != b'0') && head[36..52].iter().any(|&b| b != b'0');
    let tail_ok = match version {
        b"00" => rest.is_empty(),
        _ => rest.is_empty() || (rest[0] == b'-' && rest[1..].iter().all(u8::is_ascii_graphic)),
    };
    ids_set && tail_ok
}

/// Whether `value` is a `tracestate`: up to 32 comma-separated `key=value` members (empty
/// members and optional blanks around them allowed), keys unique, at most
/// [`MAX_TRACESTATE_BYTES`] in all.
pub fn is_valid_tracestate(value: &str) -> bool {
    if value.len() > MAX_TRACESTATE_BYTES {
        return false;
    }
    let mut keys = Vec::new();
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let Some((key, member_value)) = member.split_once('=') else {
            return false;
        };
        if !is_tracestate_key(key) || !is_tracestate_value(member_value) || keys.contains(&key) {
            return false;
        }
        keys.push(key);
    }
    keys.len() <= MAX_TRACESTATE_MEMBERS
}

fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// `simple-key` or `tenant-id@system-id`.
fn is_tracestate_key(key: &str) -> bool {
    let part_char = |b: &u8| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
    };
    let starts_right = |part: &[u8]| {
        part.first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match key.split_once('@') {
        None => {
            let key = key.as_bytes();
            key.len() <= 256
                && key.first().is_some_and(u8::is_ascii_lowercase)
                && key.iter().all(part_char)
        }
        Some((tenant, system)) => {
            let (tenant, system) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&tenant.len())
                && (1..=14).contains(&system.len())
                && starts_right(tenant)
                && system.first().is_some_and(u8::is_ascii_lowercase)
                && tenant.iter().all(part_char)
                && system.iter().all(part_char)
        }
    }
}

/// 1 to 256 printable ASCII characters other than `,` and `=` (a trailing blank, which the
/// grammar forbids, was already taken off the member as optional white space).
fn is_tracestate_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    (1..=256).contains(&bytes.len())
        && bytes
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn traceparents_follow_the_w3c_grammar() {
        assert!(is_valid_traceparent(GOOD));
        assert!(is_valid_traceparent(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future"
        ));
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nX-Evil: 1",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-\u{7f}",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0é",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad:?}");
        }
    }

    #[test]
    fn tracestates_follow_the_w3c_grammar() {
        for good in [
            "",
            "congo=t61rcWkgMzE",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            " rojo=1 , ,congo=2\t",
            "fw529a3039@dt=ZmFzZ,a-b_c*d/e=x y",
        ] {
            assert!(is_valid_tracestate(good), "{good:?}");
        }
        let too_many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let too_long = format!("k={}", "v".repeat(MAX_TRACESTATE_BYTES));
        for bad in [
            "congo=t61rcWkgMzE\n",
            "congo=a\r\nX-Evil: 1",
            "congo",
            "Congo=1",
            "1congo=1",
            "congo=",
            "congo=a=b",
            "congo=a\tb",
            "congo=1,congo=2",
            "@dt=1",
            "tenant@=1",
            "tenant@Dt=1",
            "congo=é",
            too_many.join(",").as_str(),
            too_long.as_str(),
        ] {
            assert!(!is_valid_tracestate(bad), "{bad:?}");
        }
    }
}
