//! The service catalog of Tails Server: one YAML file per service in `services/`
//! (`services/NAME.yaml`), parsed with serde-saphyr and checked strictly. Adding a
//! service is adding a file.
//!
//! [`Catalog::load_dir`] loads every valid service of a directory and returns one
//! [`LoadError`] per problem in the others: a malformed file never keeps the other
//! services from loading. Each error is one line naming the file, the line where known
//! and the field: `services/foo.yaml: line 7: field default_target_port: …`.
//!
//! A [`Service`] holds the fields of the Tails Server blueprint (name, description,
//! client application, documentation, icon, packages, default target and virtual
//! ports, persistent paths, options, connection info) and how it starts in the App VM
//! ([`Start`]: argv, user, config file templates). Its options ([`OptionSpec`]) are the
//! [`STANDARD_OPTIONS`] every service has, then the typed options its file defines;
//! values ([`OptionValue`]) are parsed strictly from text and never display a secret
//! unless [`OptionValue::reveal`] is asked. Templates ([`Template`]) use `{name}`
//! placeholders, all checked when the file is loaded.
//!
//! The file format is described in [`Service`]'s module (`src/service.rs`).

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod error;
mod names;
mod option;
mod service;
pub mod template;

pub use error::{LoadError, OptionError, Problem, RenderError, TemplateError};
pub use names::{is_package_name, MAX_NAME_LEN};
pub use option::{
    Chars, OptionKind, OptionSpec, OptionValue, Reveal, Secret, Values, ALLOW_LAN_OPTION,
    ALLOW_LOCALHOST_OPTION, AUTOSTART_OPTION, CLIENT_AUTH_OPTION, HIDDEN, PERSISTENCE_OPTION,
    SECRET_MAX_LEN, SECRET_MIN_LEN, SECRET_PUNCTUATION, STANDARD_OPTIONS, STRING_MAX_LEN,
    VIRTUAL_PORT_OPTION,
};
pub use service::{ConfigFile, ConfigTemplate, Directory, Service, Start, StartPlan, MAX_FILE_LEN};
pub use template::{Builtins, Template};

/// The services that loaded, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    services: BTreeMap<String, Service>,
}

impl Catalog {
    /// Loads every service file of `dir` (`*.yaml` and `*.yml`, not hidden). Returns the
    /// services that are valid and one error per problem in the others (also when two
    /// files define the same service: then neither loads, since which one was meant is
    /// unknown). The errors come in file name order.
    pub fn load_dir(dir: &Path) -> (Catalog, Vec<LoadError>) {
        let mut errors = Vec::new();
        let mut loaded = Vec::new();
        for file in service_files(dir, &mut errors) {
            match read_service_file(&file) {
                Err(e) => errors.push(e),
                Ok(text) => match Service::parse(&file, &text) {
                    Ok(service) => loaded.push(service),
                    Err(es) => errors.extend(es),
                },
            }
        }
        let mut by_name: BTreeMap<String, Vec<Service>> = BTreeMap::new();
        for service in loaded {
            by_name
                .entry(service.name().to_string())
                .or_default()
                .push(service);
        }
        let mut services = BTreeMap::new();
        for (name, mut group) in by_name {
            if group.len() == 1 {
                if let Some(service) = group.pop() {
                    services.insert(name, service);
                }
                continue;
            }
            for (i, service) in group.iter().enumerate() {
                let other = &group[(i + 1) % group.len()];
                errors.push(LoadError::new(
                    service.file(),
                    Some(service.name_line()),
                    Some("name".to_string()),
                    Problem::DuplicateService {
                        name: name.clone(),
                        other: other.file().to_path_buf(),
                    },
                ));
            }
        }
        errors.sort_by(|a, b| a.file().cmp(b.file()));
        (Catalog { services }, errors)
    }

    /// The service called `name`.
    pub fn get(&self, name: &str) -> Option<&Service> {
        self.services.get(name)
    }

    /// The services, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// The services' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    /// How many services loaded.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether no service loaded.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Every package of every service, sorted and deduplicated.
    pub fn packages(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self
            .iter()
            .flat_map(|s| s.packages().iter().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// The service files of `dir`, sorted; problems reading the directory go to `errors`.
fn service_files(dir: &Path, errors: &mut Vec<LoadError>) -> Vec<PathBuf> {
    let read_error = |e| LoadError::new(dir, None, None, Problem::Read(e));
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(read_error(e));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) => {
                errors.push(read_error(e));
                continue;
            }
        };
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        );
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if is_yaml && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The contents of a service file, refusing one larger than [`MAX_FILE_LEN`].
fn read_service_file(file: &Path) -> Result<String, LoadError> {
    let read_error = |e| LoadError::new(file, None, None, Problem::Read(e));
    let size = std::fs::metadata(file).map_err(read_error)?.len();
    if size > MAX_FILE_LEN {
        let problem = Problem::TooLarge {
            size,
            limit: MAX_FILE_LEN,
        };
        return Err(LoadError::new(file, None, None, problem));
    }
    std::fs::read_to_string(file).map_err(read_error)
}
