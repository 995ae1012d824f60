//! Reading the Debian packages the catalogued services need from `services/*.yaml`.
//! Only the `packages:` list matters here; every other field is ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{ImageError, IoContext};

/// The part of a service description the image builder reads.
#[derive(Debug, Deserialize)]
struct ServicePackages {
    packages: Vec<String>,
}

/// The service description files in `dir` (`*.yaml`, `*.yml`), sorted by name.
pub(crate) fn service_files(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        );
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The `packages:` list of one service file, each name checked to be a Debian package name.
pub(crate) fn read_packages(path: &Path) -> Result<Vec<String>, ImageError> {
    let text = std::fs::read_to_string(path).at(path)?;
    parse_packages(path, &text)
}

fn parse_packages(path: &Path, text: &str) -> Result<Vec<String>, ImageError> {
    let spec: ServicePackages = serde_saphyr::from_str(text).map_err(|e| ImageError::Service {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    for name in &spec.packages {
        if !is_package_name(name) {
            return Err(ImageError::Service {
                path: path.to_path_buf(),
                message: format!("{name:?} is not a Debian package name"),
            });
        }
    }
    Ok(spec.packages)
}

/// Debian policy 5.6.1 (the catalog's rule: the same files, the same check).
pub(crate) fn is_package_name(name: &str) -> bool {
    tails_catalog::is_package_name(name)
}

/// The service files in `dir` that name `package` (unreadable ones left out).
pub(crate) fn files_naming(dir: &Path, package: &str) -> Vec<PathBuf> {
    service_files(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| read_packages(f).is_ok_and(|p| p.iter().any(|n| n == package)))
        .collect()
}

/// Every package of every service in `dir`, sorted and deduplicated.
pub(crate) fn all_packages(dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut all = Vec::new();
    for file in service_files(dir)? {
        all.extend(read_packages(&file)?);
    }
    all.sort();
    all.dedup();
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_file_ignores_other_fields() {
        let text = "name: nginx\ndescription: a web server\npackages: [nginx-light, libfoo2.0+x]\n\
                    options: []\ndefault_target_port: 80\n";
        let pkgs = parse_packages(Path::new("services/nginx.yaml"), text).unwrap();
        assert_eq!(pkgs, vec!["nginx-light", "libfoo2.0+x"]);
    }

    #[test]
    fn malformed_file_names_the_file() {
        let text = "name: nginx\npackages: [nginx-light\n  bad: : :\n";
        let err = parse_packages(Path::new("services/broken.yaml"), text).unwrap_err();
        assert!(err.to_string().contains("services/broken.yaml"), "{err}");
    }

    #[test]
    fn missing_packages_or_bad_names_are_errors() {
        let err = parse_packages(Path::new("s/a.yaml"), "name: x\n").unwrap_err();
        assert!(err.to_string().contains("s/a.yaml"), "{err}");
        let err = parse_packages(Path::new("s/b.yaml"), "packages: [\"a,b\"]\n").unwrap_err();
        assert!(
            err.to_string().contains("not a Debian package name"),
            "{err}"
        );
        let err = parse_packages(Path::new("s/c.yaml"), "packages: [\"--x\"]\n").unwrap_err();
        assert!(err.to_string().contains("s/c.yaml"), "{err}");
    }

    #[test]
    fn directory_is_merged_sorted_deduplicated() {
        let dir = crate::testutil::TempDir::new("services");
        std::fs::write(dir.path().join("b.yaml"), "packages: [zsh, curl]\n").unwrap();
        std::fs::write(dir.path().join("a.yml"), "packages: [curl, apache2]\n").unwrap();
        std::fs::write(dir.path().join("README.md"), "not yaml: [").unwrap();
        assert_eq!(
            all_packages(dir.path()).unwrap(),
            vec!["apache2", "curl", "zsh"]
        );
        std::fs::write(dir.path().join("c.yaml"), "packages: {").unwrap();
        let err = all_packages(dir.path()).unwrap_err();
        assert!(err.to_string().contains("c.yaml"), "{err}");
    }

    #[test]
    fn repository_services_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services");
        let pkgs = all_packages(&dir).unwrap();
        assert!(pkgs.contains(&"nginx-light".to_string()), "{pkgs:?}");
    }
}
