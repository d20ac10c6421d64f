//! Memorable random passwords and the printable credential sheet (CSV) an
//! instructor hands out.

use std::io::Write;
use std::path::Path;

/// Short, unambiguous, easy-to-type words. Three of them and two digits give
/// about 30 bits, plenty behind a per-account login rate limit.
const WORDS: &[&str] = &[
    "acorn", "amber", "anchor", "apple", "arrow", "aspen", "atlas", "autumn", "badge", "bamboo",
    "banjo", "basil", "beach", "beacon", "berry", "birch", "bison", "blaze", "bloom", "bonus",
    "brave", "breeze", "brick", "brook", "cabin", "cactus", "camel", "candle", "canoe", "canyon",
    "cargo", "cedar", "chalk", "cherry", "cider", "cinema", "clover", "cobalt", "comet", "coral",
    "cotton", "crane", "crystal", "daisy", "delta", "desert", "dolphin", "dragon", "drift",
    "eagle", "ember", "falcon", "fern", "fiddle", "flint", "forest", "fossil", "fox", "frost",
    "galaxy", "garnet", "gecko", "ginger", "glacier", "globe", "granite", "grape", "harbor",
    "hazel", "heron", "honey", "horizon", "igloo", "indigo", "island", "ivory", "jasmine", "jelly",
    "jungle", "kayak", "kettle", "kiwi", "koala", "lagoon", "lantern", "lemon", "lilac", "lime",
    "lotus", "lunar", "magnet", "mango", "maple", "marble", "meadow", "melon", "meteor", "mint",
    "mocha", "nectar", "noodle", "nutmeg", "oasis", "ocean", "olive", "onyx", "orbit", "orchid",
    "otter", "panda", "papaya", "pebble", "pepper", "piano", "pilot", "pine", "planet", "plum",
    "polar", "poppy", "prism", "puzzle", "quartz", "quill", "radar", "raven", "reef", "ribbon",
    "river", "robin", "rocket", "ruby", "saffron", "salmon", "sapphire", "school", "shell",
    "sierra", "silver", "sketch", "sonic", "spark", "spruce", "stone", "summit", "sunset", "swift",
    "tango", "thistle", "thunder", "tiger", "timber", "topaz", "torch", "tulip", "tundra",
    "turtle", "umbra", "valley", "velvet", "violet", "walnut", "willow", "winter", "wizard",
    "yarrow", "zebra", "zenith", "zephyr",
];

/// `word-word-word-NN`, from the OS random source.
pub fn generate_password() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    let pick = |i: usize| {
        let n = u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize;
        WORDS[n % WORDS.len()]
    };
    let digits = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) % 90 + 10;
    format!("{}-{}-{}-{}", pick(0), pick(4), pick(8), digits)
}

/// One line of the credential sheet.
#[derive(Debug, Clone)]
pub struct CredentialRow {
    pub user: String,
    pub password: String,
    pub role: String,
}

/// Writes `user,password,role,url` rows (RFC 4180 quoting) with a header.
/// The file is created with owner-only permissions: it holds passwords.
pub fn write_credentials_csv(
    path: &Path,
    rows: &[CredentialRow],
    url: &str,
) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    writeln!(f, "user,password,role,url")?;
    for r in rows {
        writeln!(
            f,
            "{},{},{},{}",
            csv(&r.user),
            csv(&r.password),
            csv(&r.role),
            csv(url)
        )?;
    }
    f.sync_all()
}

fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_look_memorable_and_differ() {
        let a = generate_password();
        let b = generate_password();
        assert_ne!(a, b);
        let parts: Vec<_> = a.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert!(parts[..3].iter().all(|w| WORDS.contains(w)));
        assert!(
            parts[3]
                .parse::<u32>()
                .is_ok_and(|n| (10..100).contains(&n))
        );
    }

    #[test]
    fn csv_quotes_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.csv");
        let rows = vec![CredentialRow {
            user: "u1".into(),
            password: "a,b".into(),
            role: "participant".into(),
        }];
        write_credentials_csv(&path, &rows, "http://x").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "user,password,role,url\nu1,\"a,b\",participant,http://x\n"
        );
    }
}
