//! Templates (minijinja) of the e-mails and the pages, and the pages'
//! static files: built into the binary from `templates/`, each overridable
//! by a file with the same path under `SWITCHBOARD_TEMPLATES_DIR`, read at
//! every use.

use std::path::{Path, PathBuf};

use anyhow::Context;
use minijinja::Environment;
use serde_json::Value;

const BUILT_IN: &[(&str, &str)] = &[
    (
        "pages/layout.html",
        include_str!("../templates/pages/layout.html"),
    ),
    (
        "pages/admin.html",
        include_str!("../templates/pages/admin.html"),
    ),
    (
        "pages/cabinet.html",
        include_str!("../templates/pages/cabinet.html"),
    ),
    (
        "assets/app.css",
        include_str!("../templates/assets/app.css"),
    ),
    (
        "assets/admin.css",
        include_str!("../templates/assets/admin.css"),
    ),
    (
        "assets/admin.js",
        include_str!("../templates/assets/admin.js"),
    ),
    (
        "assets/admin-ops.css",
        include_str!("../templates/assets/admin-ops.css"),
    ),
    (
        "assets/admin-ops.js",
        include_str!("../templates/assets/admin-ops.js"),
    ),
    (
        "assets/cabinet.css",
        include_str!("../templates/assets/cabinet.css"),
    ),
    (
        "assets/cabinet.js",
        include_str!("../templates/assets/cabinet.js"),
    ),
    (
        "assets/email-pages.js",
        include_str!("../templates/assets/email-pages.js"),
    ),
    (
        "pages/forgot_password.html",
        include_str!("../templates/pages/forgot_password.html"),
    ),
    (
        "pages/reset_password.html",
        include_str!("../templates/pages/reset_password.html"),
    ),
    (
        "pages/verify_email.html",
        include_str!("../templates/pages/verify_email.html"),
    ),
    (
        "email/already_registered.en.html",
        include_str!("../templates/email/already_registered.en.html"),
    ),
    (
        "email/already_registered.en.subject.txt",
        include_str!("../templates/email/already_registered.en.subject.txt"),
    ),
    (
        "email/already_registered.en.txt",
        include_str!("../templates/email/already_registered.en.txt"),
    ),
    (
        "email/already_registered.ru.html",
        include_str!("../templates/email/already_registered.ru.html"),
    ),
    (
        "email/already_registered.ru.subject.txt",
        include_str!("../templates/email/already_registered.ru.subject.txt"),
    ),
    (
        "email/already_registered.ru.txt",
        include_str!("../templates/email/already_registered.ru.txt"),
    ),
    (
        "email/reset_password.en.html",
        include_str!("../templates/email/reset_password.en.html"),
    ),
    (
        "email/reset_password.en.subject.txt",
        include_str!("../templates/email/reset_password.en.subject.txt"),
    ),
    (
        "email/reset_password.en.txt",
        include_str!("../templates/email/reset_password.en.txt"),
    ),
    (
        "email/reset_password.ru.html",
        include_str!("../templates/email/reset_password.ru.html"),
    ),
    (
        "email/reset_password.ru.subject.txt",
        include_str!("../templates/email/reset_password.ru.subject.txt"),
    ),
    (
        "email/reset_password.ru.txt",
        include_str!("../templates/email/reset_password.ru.txt"),
    ),
    (
        "email/verify_email.en.html",
        include_str!("../templates/email/verify_email.en.html"),
    ),
    (
        "email/verify_email.en.subject.txt",
        include_str!("../templates/email/verify_email.en.subject.txt"),
    ),
    (
        "email/verify_email.en.txt",
        include_str!("../templates/email/verify_email.en.txt"),
    ),
    (
        "email/verify_email.ru.html",
        include_str!("../templates/email/verify_email.ru.html"),
    ),
    (
        "email/verify_email.ru.subject.txt",
        include_str!("../templates/email/verify_email.ru.subject.txt"),
    ),
    (
        "email/verify_email.ru.txt",
        include_str!("../templates/email/verify_email.ru.txt"),
    ),
];

/// A rendered e-mail: subject, plain text and HTML alternatives.
#[derive(Debug, Clone)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Clone)]
pub struct Templates {
    override_dir: Option<PathBuf>,
}

/// One of the pages' static files (`templates/assets/<name>`).
pub struct Asset {
    pub body: String,
    pub content_type: &'static str,
    /// Changes with the content: the `v` of the URLs pages link it by.
    pub version: String,
}

impl Templates {
    pub fn new(override_dir: Option<PathBuf>) -> Self {
        Self { override_dir }
    }

    fn source(&self, path: &str) -> Option<String> {
        if let Some(dir) = &self.override_dir {
            // Only plain relative paths: a template name never climbs out.
            if !path.contains("..")
                && let Ok(text) = std::fs::read_to_string(dir.join(path))
            {
                return Some(text);
            }
        }
        BUILT_IN
            .iter()
            .find(|(name, _)| *name == path)
            .map(|(_, text)| (*text).to_owned())
    }

    /// Renders `email/<name>.<language>.*`, falling back to English.
    pub fn render_email(
        &self,
        name: &str,
        language: &str,
        context: &Value,
    ) -> anyhow::Result<RenderedEmail> {
        let language = if self
            .source(&format!("email/{name}.{language}.subject.txt"))
            .is_some()
        {
            language
        } else {
            "en"
        };
        let mut env = Environment::new();
        let loader = self.clone();
        env.set_loader(move |path| Ok(loader.source(path)));
        let render = |part: &str| -> anyhow::Result<String> {
            let path = format!("email/{name}.{language}.{part}");
            env.get_template(&path)
                .and_then(|t| t.render(minijinja::value::Serde(context)))
                .with_context(|| format!("rendering {path}"))
        };
        Ok(RenderedEmail {
            subject: render("subject.txt")?.trim().to_owned(),
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

impl Templates {
    /// Renders `pages/<name>.html` (HTML-escaped); `asset(name)` in a
    /// template is the versioned URL of a static file.
    pub fn render_page(&self, name: &str, context: &Value) -> anyhow::Result<String> {
        let mut env = Environment::new();
        let loader = self.clone();
        env.set_loader(move |path| Ok(loader.source(path)));
        let assets = self.clone();
        env.add_function("asset", move |name: String| {
            assets
                .asset(&name)
                .map(|asset| {
                    // Its characters need no escaping (`/` would be `&#x2f;`).
                    minijinja::Value::from_safe_string(format!(
                        "/assets/{name}?v={}",
                        asset.version
                    ))
                })
                .ok_or_else(|| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("no asset {name}"),
                    )
                })
        });
        let path = format!("pages/{name}.html");
        env.get_template(&path)
            .and_then(|t| t.render(minijinja::value::Serde(context)))
            .with_context(|| format!("rendering {path}"))
    }

    /// A static file of the pages by its name; only the built-in names
    /// exist (an override directory replaces them, never adds any).
    pub fn asset(&self, name: &str) -> Option<Asset> {
        let path = format!("assets/{name}");
        BUILT_IN.iter().find(|(known, _)| *known == path)?;
        let body = self.source(&path)?;
        let content_type = match name.rsplit('.').next() {
            Some("css") => "text/css; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            _ => "application/octet-stream",
        };
        let digest = <sha2::Sha256 as sha2::Digest>::digest(body.as_bytes());
        Some(Asset {
            version: hex::encode(&digest[..6]),
            body,
            content_type,
        })
    }
}

/// The directory of the built-in templates in the source tree.
pub fn source_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_email_renders_in_english_and_russian_with_the_link() {
        let templates = Templates::new(None);
        for name in ["verify_email", "reset_password", "already_registered"] {
            for language in ["en", "ru"] {
                let email = templates
                    .render_email(
                        name,
                        language,
                        &json!({"link": "https://x.test/a?t=1&u=2", "reset_link": "https://x.test/a?t=1&u=2"}),
                    )
                    .unwrap();
                assert!(!email.subject.is_empty());
                assert!(
                    email.text.contains("https://x.test/a?t=1&u=2"),
                    "{name}.{language}"
                );
                // HTML is escaped (minijinja also escapes `/`, which
                // browsers decode in attributes as in text).
                assert!(
                    email.html.contains("t=1&amp;u=2"),
                    "{name}.{language}: {}",
                    email.html
                );
                assert!(!email.html.contains("t=1&u=2"), "{name}.{language}");
            }
        }
    }

    #[test]
    fn an_unknown_language_falls_back_to_english_and_a_file_on_disk_overrides() {
        let templates = Templates::new(None);
        let email = templates
            .render_email("verify_email", "de", &json!({"link": "L"}))
            .unwrap();
        assert_eq!(email.subject, "Confirm your e-mail address");

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("email")).unwrap();
        std::fs::write(
            dir.path().join("email/verify_email.en.subject.txt"),
            "Custom {{ link }}",
        )
        .unwrap();
        let templates = Templates::new(Some(dir.path().to_owned()));
        let email = templates
            .render_email("verify_email", "en", &json!({"link": "L"}))
            .unwrap();
        assert_eq!(email.subject, "Custom L");
        // Parts not overridden still come from the binary.
        assert!(email.text.contains("please confirm"));
    }
}
