//! Self-signed TLS certificates for the services that speak TLS (XMPP, Gobby),
//! made at a service's first start with the App VM's openssl (an EC P-256
//! key; `openssl ca -selfsign`, which alone in OpenSSL 3.0 sets the validity
//! dates).
//!
//! A certificate is valid from 00:00 UTC of the day before it was made, for
//! ten years: its `notBefore` tells a client nothing finer than the day of
//! the App VM's (offset) clock, and a client whose clock is behind the App
//! VM's (moved by up to three minutes, see `clock`) still accepts it.

use std::path::Path;
use std::time::Duration;

use tails_guest::log;
use tails_proto::msg::{ServiceCert, ServiceFile};

use crate::services::{clean_absolute, write_file};
use tails_guest::exec::last_line;

/// How long openssl may take for one step.
const STEP: Duration = Duration::from_secs(60);
/// Where the work is done (a tmpfs, root's only).
const WORK: &str = "/run/tails-server-certs";
/// Validity, in days.
const DAYS: i64 = 3650;

/// Why `c` is malformed, if it is.
pub fn check(c: &ServiceCert) -> Result<(), String> {
    if !clean_absolute(&c.key) || !clean_absolute(&c.cert) || c.key == c.cert {
        return Err("a certificate needs two distinct clean absolute paths".into());
    }
    if c.names.is_empty() || c.names.len() > 16 || !c.names.iter().all(|n| dns_name(n)) {
        return Err("a certificate needs 1 to 16 DNS names (letters, digits, - and .)".into());
    }
    Ok(())
}

fn dns_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// The civil date (year, month, day) of `days` since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYYMMDD000000Z` for 00:00 UTC of `days` since 1970-01-01.
fn midnight(days: i64) -> String {
    let (y, m, d) = civil(days);
    format!("{y:04}{m:02}{d:02}000000Z")
}

async fn openssl(args: &[&str]) -> Result<(), String> {
    let run = tails_guest::exec::system("/usr/bin/openssl")
        .args(args)
        .output();
    let out = tokio::time::timeout(STEP, run)
        .await
        .map_err(|_| format!("openssl {} took over {} s", args[0], STEP.as_secs()))?
        .map_err(|e| {
            format!("cannot run /usr/bin/openssl (is openssl in the service's packages?): {e}")
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "openssl {} failed ({}): {}",
        args[0],
        out.status,
        last_line(&out.stderr, &[])
    ))
}

/// Make `c` for `service` unless its certificate exists.
pub async fn make(service: &str, c: &ServiceCert) -> Result<(), String> {
    if std::fs::symlink_metadata(&c.cert).is_ok() {
        return Ok(());
    }
    let dir = Path::new(WORK).join(service);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(WORK).map_err(|e| format!("{WORK}: {e}"))?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let res = make_in(service, c, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    res
}

async fn make_in(service: &str, c: &ServiceCert, dir: &Path) -> Result<(), String> {
    let p = |name: &str| dir.join(name).display().to_string();
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    let mut random = [0u8; 16];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .map_err(io)?;
    }
    random[0] &= 0x7f; // a positive serial number
    let serial: String = random.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join("serial"), format!("{serial}\n")).map_err(io)?;
    std::fs::write(dir.join("index.txt"), "").map_err(io)?;
    let config = format!(
        "[ca]\ndefault_ca = tails\n[tails]\ndatabase = {index}\nnew_certs_dir = {dir}\n\
         serial = {serialf}\ndefault_md = sha256\npolicy = any\ncopy_extensions = copy\n\
         unique_subject = no\n[any]\ncommonName = supplied\n",
        index = p("index.txt"),
        dir = dir.display(),
        serialf = p("serial"),
    );
    std::fs::write(dir.join("ca.cnf"), config).map_err(io)?;
    let san = c
        .names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let subject = format!("/CN={}", c.names[0]);
    let (key, req, cert, cnf) = (p("key.pem"), p("req.pem"), p("cert.pem"), p("ca.cnf"));
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-noenc",
        "-subj",
        &subject,
        "-addext",
        &format!("subjectAltName={san}"),
        "-keyout",
        &key,
        "-out",
        &req,
    ])
    .await?;
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| format!("the clock is before 1970: {e}"))?
        .as_secs() as i64
        / 86_400;
    let (start, end) = (midnight(today - 1), midnight(today - 1 + DAYS));
    openssl(&[
        "ca",
        "-batch",
        "-config",
        &cnf,
        "-selfsign",
        "-keyfile",
        &key,
        "-in",
        &req,
        "-out",
        &cert,
        "-startdate",
        &start,
        "-enddate",
        &end,
        "-notext",
    ])
    .await?;
    // The key first: a certificate without its key would look made.
    for (from, to, mode) in [(&key, &c.key, 0o600), (&cert, &c.cert, 0o644)] {
        let contents = std::fs::read(from).map_err(|e| format!("{from}: {e}"))?;
        write_file(&ServiceFile {
            path: to.clone(),
            mode,
            contents,
            owner: Some(c.owner.clone()),
        })?;
    }
    log(format!("service {service}: made its TLS certificate"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(midnight(0), "19700101000000Z");
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(midnight(20_788), "20261201000000Z");
        assert_eq!(civil(-1), (1969, 12, 31));
    }

    #[test]
    fn names_and_paths_are_checked() {
        let good = ServiceCert {
            key: "/var/lib/x/key.pem".into(),
            cert: "/var/lib/x/cert.pem".into(),
            owner: "x".into(),
            names: vec!["abc.onion".into(), "rooms.abc.onion".into()],
        };
        assert!(check(&good).is_ok());
        for bad in [
            ServiceCert {
                names: vec![],
                ..good.clone()
            },
            ServiceCert {
                names: vec!["a b".into()],
                ..good.clone()
            },
            ServiceCert {
                names: vec!["/CN=x".into()],
                ..good.clone()
            },
            ServiceCert {
                names: vec!["x..onion".into()],
                ..good.clone()
            },
            ServiceCert {
                key: good.cert.clone(),
                ..good.clone()
            },
            ServiceCert {
                key: "key.pem".into(),
                ..good.clone()
            },
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }

    /// With the host's openssl (the App VM's is the same Debian package).
    #[tokio::test]
    async fn a_certificate_is_made_once_valid_since_yesterday() {
        let dir = std::env::temp_dir().join(format!("ts-cert-{}", std::process::id()));
        let c = ServiceCert {
            key: dir.join("tls/key.pem").display().to_string(),
            cert: dir.join("tls/cert.pem").display().to_string(),
            owner: "nobody".into(),
            names: vec!["abc.onion".into(), "rooms.abc.onion".into()],
        };
        make("test-cert", &c).await.unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-startdate",
                "-ext",
                "subjectAltName",
                "-in",
            ])
            .arg(&c.cert)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("00:00:00"), "{text}");
        assert!(
            text.contains("DNS:abc.onion, DNS:rooms.abc.onion"),
            "{text}"
        );
        use std::os::unix::fs::MetadataExt;
        let key = std::fs::metadata(&c.key).unwrap();
        assert_eq!(key.mode() & 0o777, 0o600);
        let first = std::fs::read(&c.cert).unwrap();
        make("test-cert", &c).await.unwrap();
        assert_eq!(std::fs::read(&c.cert).unwrap(), first, "made once");
        assert!(!Path::new(WORK).join("test-cert").exists(), "work removed");
        let _ = std::fs::remove_dir_all(dir);
    }
}
