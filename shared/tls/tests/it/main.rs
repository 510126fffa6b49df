//! Reading and checking CONTEXTEN_CA_FILE and the client certificate, with
//! certificates made for the test (contexten-testkit).

use contexten_config::Env;
use contexten_testkit::TestCerts;
use contexten_tls::{CA_FILE_VAR, CLIENT_CERT_VAR, CLIENT_KEY_VAR, TlsError, TlsSettings};
use std::path::Path;

fn settings(pairs: &[(&str, &Path)]) -> Result<TlsSettings, TlsError> {
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(var, path)| (*var, path.to_str().unwrap()))
        .collect();
    TlsSettings::from_env(&Env::from_pairs(pairs))
}

fn certs() -> (tempfile::TempDir, TestCerts) {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path()).unwrap();
    (dir, certs)
}

#[test]
fn nothing_set_is_the_platform_roots_only() {
    let settings = TlsSettings::from_env(&Env::from_pairs([])).unwrap();
    assert_eq!(
        format!("{settings:?}"),
        "TlsSettings { extra_roots: 0, client_certificate: false }"
    );
}

#[test]
fn a_ca_bundle_and_a_client_certificate_are_read() {
    let (_dir, certs) = certs();
    let settings = settings(&[
        (CA_FILE_VAR, &certs.ca),
        (CLIENT_CERT_VAR, &certs.client_cert),
        (CLIENT_KEY_VAR, &certs.client_key),
    ])
    .unwrap();
    assert!(settings.has_client_certificate());
    // Debug shows counts, never key material.
    assert_eq!(
        format!("{settings:?}"),
        "TlsSettings { extra_roots: 1, client_certificate: true }"
    );
}

#[test]
fn a_certificate_without_its_key_or_a_key_without_its_certificate_is_refused() {
    let (_dir, certs) = certs();
    let error = settings(&[(CLIENT_CERT_VAR, &certs.client_cert)]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "CONTEXTEN_CLIENT_CERT_FILE is set but CONTEXTEN_CLIENT_KEY_FILE is not: a client certificate needs both"
    );
    let error = settings(&[(CLIENT_KEY_VAR, &certs.client_key)]).unwrap_err();
    assert!(matches!(
        error,
        TlsError::HalfIdentity {
            set: CLIENT_KEY_VAR,
            missing: CLIENT_CERT_VAR
        }
    ));
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let (_dir, certs) = certs();
    let error = settings(&[
        (CLIENT_CERT_VAR, &certs.client_cert),
        (CLIENT_KEY_VAR, &certs.server_key),
    ])
    .unwrap_err();
    assert!(
        matches!(&error, TlsError::Invalid { var, .. } if *var == CLIENT_KEY_VAR),
        "{error}"
    );
}

#[test]
fn a_missing_file_or_one_without_certificates_names_the_variable_and_path() {
    let (dir, certs) = certs();
    let missing = dir.path().join("missing.pem");
    let error = settings(&[(CA_FILE_VAR, &missing)])
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("CONTEXTEN_CA_FILE="), "{error}");
    assert!(error.contains("missing.pem"), "{error}");
    // A key is not a CA bundle.
    let error = settings(&[(CA_FILE_VAR, &certs.client_key)])
        .unwrap_err()
        .to_string();
    assert!(error.contains("no PEM CERTIFICATE block"), "{error}");
}

#[test]
fn init_decides_once_for_the_process() {
    let (_dir, certs) = certs();
    let ca = certs.ca.to_str().unwrap();
    let first = contexten_tls::init(&Env::from_pairs([(CA_FILE_VAR, ca)])).unwrap();
    let again = contexten_tls::init(&Env::from_pairs([])).unwrap();
    assert!(std::ptr::eq(first, again));
    assert!(std::ptr::eq(first, contexten_tls::global().unwrap()));
    assert_eq!(
        format!("{first:?}"),
        format!("{:?}", settings(&[(CA_FILE_VAR, &certs.ca)]).unwrap())
    );
}
