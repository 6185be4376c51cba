//! `postgres://` URLs: which ones the store takes, and how they are shown without a password.

/// Whether `url` names a PostgreSQL database (`postgres://…` or `postgresql://…`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` as errors and logs show it: without the password of its user part or of a
/// `password=` parameter. Anything that is not a `scheme://` URL is shown as it is.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The user part ends at the last '@' before the query, so a password with an unencoded
    // '/' or '@' is still hidden.
    let query_start = rest.find('?').unwrap_or(rest.len());
    let (user_info, tail) = match rest[..query_start].rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let user = match user_info {
        Some(user_info) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@"),
            None => format!("{user_info}@"),
        },
        None => String::new(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{user}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://labboot:s3cr:et@db.lab:5432/lab"),
            "postgres://labboot:***@db.lab:5432/lab"
        );
        assert_eq!(
            redact("postgresql://u@h1,h2/lab?sslmode=disable&password=x&application_name=a"),
            "postgresql://u@h1,h2/lab?sslmode=disable&password=***&application_name=a"
        );
        assert_eq!(redact("postgres://p%40ss@h/db"), "postgres://p%40ss@h/db");
        assert_eq!(redact("postgres://u:p@h"), "postgres://u:***@h");
        assert_eq!(redact("postgres://u:a/b@c@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("postgres:///db?host=/run/pg"),
            "postgres:///db?host=/run/pg"
        );
        assert_eq!(redact("sqlite:x.db"), "sqlite:x.db");
    }

    #[test]
    fn postgres_schemes() {
        assert!(is_postgres_url("postgres://h/db"));
        assert!(is_postgres_url("postgresql://h/db"));
        assert!(!is_postgres_url("postgres:h"));
        assert!(!is_postgres_url("sqlite:labboot.db"));
    }
}
