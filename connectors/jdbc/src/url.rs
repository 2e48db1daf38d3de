//! JDBC connection URLs as Kafka Connect users write them: `jdbc:postgresql://host:port/db`,
//! `jdbc:mariadb://…` and `jdbc:mysql://…`, with `user`/`password` among the properties.

use std::collections::BTreeMap;
use std::fmt;

/// The SQL dialect behind a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    /// MariaDB and MySQL.
    MySql,
}

#[derive(Clone, PartialEq, Eq)]
pub struct JdbcUrl {
    pub dialect: Dialect,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Other properties, kept for messages; none changes how Sluice connects yet.
    pub properties: BTreeMap<String, String>,
}

/// Never shows the password.
impl fmt::Debug for JdbcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for JdbcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.dialect {
            Dialect::Postgres => "postgresql",
            Dialect::MySql => "mysql",
        };
        write!(
            f,
            "jdbc:{scheme}://{}:{}/{}",
            self.host, self.port, self.database
        )
    }
}

impl JdbcUrl {
    pub fn parse(url: &str) -> Result<JdbcUrl, String> {
        let url = url.trim();
        let rest = url
            .strip_prefix("jdbc:")
            .ok_or_else(|| format!("{:?} is not a JDBC URL (jdbc:postgresql://host:port/database, jdbc:mariadb://… or jdbc:mysql://…)", redact(url)))?;
        let (scheme, rest) = rest
            .split_once("://")
            .ok_or_else(|| format!("{:?} has no //host part", redact(url)))?;
        let (dialect, default_port) = match scheme {
            "postgresql" => (Dialect::Postgres, 5432),
            "mariadb" | "mysql" => (Dialect::MySql, 3306),
            other => {
                return Err(format!(
                    "unsupported database {other:?}: Sluice's JDBC connectors speak postgresql, mariadb and mysql"
                ))
            }
        };
        let (address, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let (database, query) = rest.split_once('?').unwrap_or((rest, ""));
        // MySQL URLs may carry properties after ';' too.
        let (address, query) = match address.split_once('?') {
            Some((a, q)) => (a, q),
            None => (address, query),
        };
        if address.contains(',') {
            return Err(format!(
                "{:?} names several hosts; give one host",
                redact(url)
            ));
        }
        let (host, port) = match address.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || address.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse()
                    .map_err(|_| format!("invalid port {p:?} in the JDBC URL"))?,
            ),
            _ => (address, default_port),
        };
        let host = if host.is_empty() { "localhost" } else { host };
        let mut properties = BTreeMap::new();
        for pair in query.split(['&', ';']).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            properties.insert(k.to_string(), v.to_string());
        }
        let user = properties.remove("user");
        let password = properties.remove("password");
        Ok(JdbcUrl {
            dialect,
            host: host.to_string(),
            port,
            database: database.to_string(),
            user,
            password,
            properties,
        })
    }
}

/// A URL for messages: the value of a `password` property replaced.
pub fn redact(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = rest.find("password=") {
        let (head, tail) = rest.split_at(at + "password=".len());
        out.push_str(head);
        out.push_str("[hidden]");
        rest = tail.find(['&', ';']).map_or("", |end| &tail[end..]);
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes() {
        let pg = JdbcUrl::parse(
            "jdbc:postgresql://db.example:6543/sales?user=u&password=s3cret&ssl=false",
        )
        .unwrap();
        assert_eq!(pg.dialect, Dialect::Postgres);
        assert_eq!(
            (pg.host.as_str(), pg.port, pg.database.as_str()),
            ("db.example", 6543, "sales")
        );
        assert_eq!(pg.user.as_deref(), Some("u"));
        assert_eq!(pg.password.as_deref(), Some("s3cret"));
        assert!(!format!("{pg:?} {pg}").contains("s3cret"), "{pg:?}");
        let my = JdbcUrl::parse("jdbc:mysql://127.0.0.1/test").unwrap();
        assert_eq!((my.dialect, my.port), (Dialect::MySql, 3306));
        let maria = JdbcUrl::parse("jdbc:mariadb://localhost:3307/x").unwrap();
        assert_eq!((maria.dialect, maria.port), (Dialect::MySql, 3307));
    }

    #[test]
    fn rejects_what_it_cannot_use_naming_the_problem() {
        assert!(JdbcUrl::parse("postgresql://h/db")
            .unwrap_err()
            .contains("not a JDBC URL"));
        assert!(JdbcUrl::parse("jdbc:oracle:thin:@h:1521:x")
            .unwrap_err()
            .contains("no //host"));
        assert!(JdbcUrl::parse("jdbc:sqlserver://h;db=x")
            .unwrap_err()
            .contains("unsupported database"));
        assert!(JdbcUrl::parse("jdbc:postgresql://h:x/db")
            .unwrap_err()
            .contains("invalid port"));
    }

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(
            redact("jdbc:postgresql://h/db?user=a&password=secret&x=1"),
            "jdbc:postgresql://h/db?user=a&password=[hidden]&x=1"
        );
    }
}
