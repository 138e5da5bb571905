//! Broker settings by Kafka's own names (`--config KEY=VALUE`, `rb.serve(config={...})`):
//! each known name sets one field of [`ServerConfig`]; an unknown name or a bad value is an
//! error naming it, never ignored.

use crate::config::ServerConfig;

/// The names [`apply`] knows, with what each sets.
pub const KNOWN: &[(&str, &str)] = &[
    (
        "num.partitions",
        "partitions of an auto-created topic (default 1)",
    ),
    (
        "auto.create.topics.enable",
        "create a topic a client asks for (default true)",
    ),
    (
        "message.max.bytes",
        "largest record batch a producer may send (default 1048588)",
    ),
    (
        "socket.request.max.bytes",
        "largest request (default 104857600)",
    ),
    (
        "group.min.session.timeout.ms",
        "smallest session timeout a consumer may ask (default 6000)",
    ),
    (
        "group.max.session.timeout.ms",
        "largest session timeout a consumer may ask (default 1800000)",
    ),
    (
        "group.initial.rebalance.delay.ms",
        "wait for more members of a new group (default 3000)",
    ),
    ("node.id", "the broker's node id (default 0)"),
    (
        "cluster.id",
        "the cluster id clients see (default riverbed)",
    ),
];

fn parse<T>(key: &str, value: &str, lo: T, hi: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let whole: i128 = value
        .trim()
        .parse()
        .map_err(|_| format!("{key}: {value:?} is not a whole number"))?;
    let out_of_range = || format!("{key}: {value} is out of range ({lo}..={hi})");
    let v: T = whole.to_string().parse().map_err(|_| out_of_range())?;
    if v < lo || v > hi {
        return Err(out_of_range());
    }
    Ok(v)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}: {value:?} is not true or false")),
    }
}

/// Set the setting `key` (Kafka's name) to `value` in `config` (unchanged on an error).
pub fn apply(config: &mut ServerConfig, key: &str, value: &str) -> Result<(), String> {
    let mut c = config.clone();
    set(&mut c, key, value)?;
    *config = c;
    Ok(())
}

fn set(config: &mut ServerConfig, key: &str, value: &str) -> Result<(), String> {
    const I32: i32 = i32::MAX;
    match key {
        "num.partitions" => config.num_partitions = parse(key, value, 1u32, 10_000)?,
        "auto.create.topics.enable" => config.auto_create_topics = parse_bool(key, value)?,
        "message.max.bytes" => config.message_max_bytes = parse(key, value, 1024usize, 1 << 30)?,
        "socket.request.max.bytes" => {
            config.request_max_bytes = parse(key, value, 1024usize, i32::MAX as usize)?
        }
        "group.min.session.timeout.ms" => {
            config.group_min_session_timeout_ms = parse(key, value, 1, I32)?
        }
        "group.max.session.timeout.ms" => {
            config.group_max_session_timeout_ms = parse(key, value, 1, I32)?
        }
        "group.initial.rebalance.delay.ms" => {
            config.group_initial_rebalance_delay_ms = parse(key, value, 0, I32)?
        }
        "node.id" => config.node_id = parse(key, value, 0, I32)?,
        "cluster.id" => {
            if value.is_empty() {
                return Err(format!("{key}: must not be empty"));
            }
            config.cluster_id = value.to_string()
        }
        _ => {
            let names: Vec<&str> = KNOWN.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "unknown broker setting {key:?}; known: {}",
                names.join(", ")
            ));
        }
    }
    if config.group_min_session_timeout_ms > config.group_max_session_timeout_ms {
        return Err(format!(
            "group.min.session.timeout.ms ({}) is above group.max.session.timeout.ms ({})",
            config.group_min_session_timeout_ms, config.group_max_session_timeout_ms
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_name_sets_its_field_and_bad_values_are_refused() {
        let mut c = ServerConfig::default();
        apply(&mut c, "num.partitions", "6").unwrap();
        apply(&mut c, "auto.create.topics.enable", "false").unwrap();
        apply(&mut c, "message.max.bytes", "2000000").unwrap();
        apply(&mut c, "group.initial.rebalance.delay.ms", "0").unwrap();
        assert_eq!(c.num_partitions, 6);
        assert!(!c.auto_create_topics);
        assert_eq!(c.message_max_bytes, 2_000_000);
        assert_eq!(c.group_initial_rebalance_delay_ms, 0);
        for (k, v) in [
            ("num.partitions", "0"),
            ("num.partitions", "-1"),
            ("num.partitions", "1000000000000"),
            ("num.partitions", "1.5"),
            ("num.partitions", "nan"),
            ("auto.create.topics.enable", "yes"),
            ("message.max.bytes", "99999999999999"),
            ("no.such.setting", "1"),
            ("group.min.session.timeout.ms", "999999999"),
        ] {
            let before = format!("{c:?}");
            let e = apply(&mut c, k, v).expect_err(k);
            assert!(e.contains(k), "{e}");
            if v.parse::<i128>().is_ok() && k != "no.such.setting" && !k.starts_with("group.min") {
                assert!(e.contains("out of range"), "{e}");
            }
            assert_eq!(format!("{c:?}"), before, "{k}={v} changed the config");
        }
    }
}
