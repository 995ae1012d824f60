//! Loading directories: the repository's `services/`, and a directory holding one good
//! file and many malformed ones, where the good one must load and each malformed one
//! get an error naming its file, line and field.

use std::path::{Path, PathBuf};

use tails_catalog::{Builtins, Catalog, LoadError, OptionValue, Problem};

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "tails-catalog-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A valid service file for `name` (11 lines; `connection_info` on line 11).
fn valid(name: &str) -> String {
    format!(
        "name: {name}
description: A test service
client_application: curl
documentation: https://example.org/
icon_name: test
packages: [test-pkg]
start: {{command: [/usr/bin/test], user: nobody}}
default_target_port: 8000
default_virtual_port: 80
options: [{{name: greeting, description: Greeting, kind: {{string: {{max_len: 20}}}}, default: hi}}]
connection_info: \"http://{{address}}/ says {{greeting}}\"
"
    )
}

/// The errors about `file` (its name within the directory).
fn errors_of<'a>(errors: &'a [LoadError], file: &str) -> Vec<&'a LoadError> {
    errors
        .iter()
        .filter(|e| e.file().file_name().and_then(|n| n.to_str()) == Some(file))
        .collect()
}

/// The single error about `file`, checked to be one line, to name the file, and to have
/// `line` and `field`.
fn the_error<'a>(
    errors: &'a [LoadError],
    file: &str,
    line: Option<u64>,
    field: Option<&str>,
) -> &'a LoadError {
    let errs = errors_of(errors, file);
    assert_eq!(errs.len(), 1, "{file}: {errs:#?}");
    let e = errs[0];
    let text = e.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.contains(file), "{text}");
    assert_eq!(e.line(), line, "{text}");
    assert_eq!(e.field(), field, "{text}");
    if let Some(line) = line {
        assert!(text.contains(&format!(": line {line}: ")), "{text}");
    }
    if let Some(field) = field {
        assert!(text.contains(&format!(": field {field}: ")), "{text}");
    }
    e
}

#[test]
fn repository_services_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services");
    let (catalog, errors) = Catalog::load_dir(&dir);
    assert!(errors.is_empty(), "{errors:#?}");
    let nginx = catalog.get("nginx").expect("nginx is in the catalog");
    assert!(nginx.packages().iter().any(|p| p == "nginx-light"));
    assert_eq!(nginx.start().user(), "www-data");
    assert_eq!(
        nginx.start().command()[0].as_str(),
        "/usr/sbin/nginx",
        "{nginx:?}"
    );
    assert!(catalog.packages().contains(&"nginx-light"));

    let mut values = nginx.initial_values().unwrap();
    let builtins = Builtins {
        address: "example.onion",
        target_port: 8080,
    };
    let plan = nginx.render_start(&values, &builtins).unwrap();
    assert_eq!(
        plan.command,
        [
            "/usr/sbin/nginx",
            "-e",
            "stderr",
            "-g",
            "daemon off;",
            "-c",
            "/etc/tails-server/nginx.conf"
        ]
    );
    let conf = &plan.files[0];
    assert_eq!(conf.path, Path::new("/etc/tails-server/nginx.conf"));
    assert!(
        conf.contents.contains("listen 8080 default_server;"),
        "{}",
        conf.contents
    );
    assert!(conf.contents.contains("root /var/www/tails-server;"));
    assert!(conf.contents.contains("autoindex off;"));
    assert!(conf.contents.contains("events {\n"));
    assert_eq!(
        nginx.render_connection_info(&values, &builtins).unwrap(),
        "http://example.onion/"
    );
    values.insert(
        "directory-listing".into(),
        nginx.parse_option("directory-listing", "on").unwrap(),
    );
    let plan = nginx.render_start(&values, &builtins).unwrap();
    assert!(plan.files[0].contents.contains("autoindex on;"));
    assert_eq!(
        nginx
            .parse_option("allow-lan", "yes")
            .unwrap_err()
            .to_string(),
        "allow-lan takes true or false"
    );
}

/// Every service of the repository can be enabled beside every other (each its own port
/// in the App VM), renders with its initial values, tells a person everything it needs
/// and runs as its own user (sshd is the one exception, by OpenSSH's design).
#[test]
fn repository_services_fit_together() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services");
    let (catalog, errors) = Catalog::load_dir(&dir);
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(catalog.len() >= 8, "{} services", catalog.len());
    let mut ports = std::collections::BTreeMap::new();
    for svc in catalog.iter() {
        let port = svc.default_target_port();
        if let Some(other) = ports.insert(port, svc.name().to_owned()) {
            panic!("{} and {other} both listen on {port}", svc.name());
        }
        let values = svc.initial_values().unwrap();
        let b = Builtins {
            address: "example.onion",
            target_port: port,
        };
        let plan = svc.render_start(&values, &b).unwrap();
        // sshd's listener stays root (OpenSSH's privilege separation); ngircd reads
        // its 0600 config as root and drops to irc itself (ServerUID).
        let root_ok = ["sftp", "ngircd"];
        assert!(
            plan.user != "root" || root_ok.contains(&svc.name()),
            "{} runs as root",
            svc.name()
        );
        let info = svc.render_connection_info(&values, &b).unwrap();
        assert!(info.contains("example.onion"), "{}: {info}", svc.name());
        // Everyone gets the connection info: it holds the secrets they connect with,
        // never the operator's (`admin-…`).
        for o in svc.options() {
            if o.kind().is_secret() && !o.is_standard() {
                let shown = info.contains(values[o.name()].reveal().to_string().as_str());
                let operator = o.name().starts_with("admin-");
                assert_eq!(
                    shown,
                    !operator,
                    "{}: the connection info and {}",
                    svc.name(),
                    o.name()
                );
            }
        }
    }
}

#[test]
fn one_good_file_loads_despite_malformed_ones() {
    let dir = TempDir::new("mixed");
    dir.write("good.yaml", &valid("good"));
    // Not service files: ignored.
    dir.write("README.md", "not: [yaml");
    dir.write(".hidden.yaml", "not: [yaml");

    // Bad YAML syntax: an unclosed flow sequence.
    dir.write(
        "syntax.yaml",
        &valid("syntax").replace("packages: [test-pkg]", "packages: [test-pkg"),
    );
    // Wrong type: a string where a list is expected.
    dir.write(
        "wrongtype.yaml",
        &valid("wrongtype").replace("packages: [test-pkg]", "packages: {a: b}"),
    );
    // Unknown field.
    dir.write(
        "unknown.yaml",
        &valid("unknown").replace("icon_name: test\n", "icon_name: test\ncolour: red\n"),
    );
    // Bad port.
    dir.write(
        "badport.yaml",
        &valid("badport").replace("default_virtual_port: 80", "default_virtual_port: 99999"),
    );
    // Default invalid for its kind.
    dir.write(
        "baddefault.yaml",
        &valid("baddefault").replace("default: hi", "default: hello there this is far too long"),
    );
    // Unknown placeholder.
    dir.write(
        "placeholder.yaml",
        &valid("placeholder").replace("{address}", "{adress}"),
    );
    // Name different from the file name.
    dir.write("stem.yaml", &valid("other"));
    // The same service twice.
    dir.write("dup.yaml", &valid("dup"));
    dir.write("dup.yml", &valid("dup"));
    // Not UTF-8.
    dir.write("binary.yaml", "name: \u{0}");
    std::fs::write(dir.0.join("latin1.yaml"), b"name: caf\xe9\n").unwrap();
    // Empty.
    dir.write("empty.yaml", "");

    let (catalog, errors) = Catalog::load_dir(&dir.0);
    assert_eq!(catalog.names().collect::<Vec<_>>(), ["good"], "{errors:#?}");
    let good = catalog.get("good").unwrap();
    assert_eq!(
        good.option("greeting").unwrap().default_value(),
        Some(&OptionValue::String("hi".into()))
    );

    let e = errors_of(&errors, "syntax.yaml");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].line().is_some(), "{}", e[0]);
    assert!(matches!(e[0].problem(), Problem::Yaml(_)), "{}", e[0]);

    the_error(&errors, "wrongtype.yaml", Some(6), Some("packages"));
    let e = the_error(&errors, "unknown.yaml", Some(6), Some("colour"));
    assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    let e = the_error(
        &errors,
        "badport.yaml",
        Some(9),
        Some("default_virtual_port"),
    );
    assert!(
        e.to_string()
            .ends_with("invalid value: integer `99999`, expected a port number from 1 to 65535"),
        "{e}"
    );
    let e = the_error(
        &errors,
        "baddefault.yaml",
        Some(10),
        Some("options[0].default"),
    );
    assert!(
        e.to_string()
            .ends_with("invalid default: greeting takes at most 20 characters of one-line text"),
        "{e}"
    );
    let e = the_error(
        &errors,
        "placeholder.yaml",
        Some(11),
        Some("connection_info"),
    );
    assert!(
        e.to_string().contains("unknown placeholder {adress}"),
        "{e}"
    );
    let e = the_error(&errors, "stem.yaml", Some(1), Some("name"));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: line 1: field name: name \"other\" differs from the file name \"stem\"",
            dir.0.join("stem.yaml").display()
        )
    );
    let e = the_error(&errors, "dup.yaml", Some(1), Some("name"));
    assert!(e.to_string().contains("is defined again in"), "{e}");
    assert!(e.to_string().contains("dup.yml"), "{e}");
    let e = the_error(&errors, "dup.yml", Some(1), Some("name"));
    assert!(e.to_string().contains("dup.yaml"), "{e}");

    let e = the_error(&errors, "latin1.yaml", None, None);
    assert!(matches!(e.problem(), Problem::Read(_)), "{e}");
    assert_eq!(errors_of(&errors, "binary.yaml").len(), 1, "{errors:#?}");
    assert_eq!(errors_of(&errors, "empty.yaml").len(), 1, "{errors:#?}");
    assert!(errors_of(&errors, "README.md").is_empty());
    assert!(errors_of(&errors, ".hidden.yaml").is_empty());

    // Every error names a file of the directory; print them for the record.
    for e in &errors {
        assert!(e.file().starts_with(&dir.0), "{e}");
        println!("{e}");
    }
    assert_eq!(errors.len(), 12, "{errors:#?}");
}

#[test]
fn missing_or_huge_inputs() {
    let (catalog, errors) = Catalog::load_dir(Path::new("/nonexistent/services"));
    assert!(catalog.is_empty());
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("/nonexistent/services: cannot read: "),
        "{}",
        errors[0]
    );

    let dir = TempDir::new("huge");
    let huge = format!("{}# {}\n", valid("huge"), "x".repeat(300 * 1024));
    dir.write("huge.yaml", &huge);
    let (catalog, errors) = Catalog::load_dir(&dir.0);
    assert!(catalog.is_empty());
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .ends_with("more than the limit of 262144"),
        "{}",
        errors[0]
    );
}
