//! The messages of PostgreSQL's `pgoutput` logical decoding plugin (protocol version 1, with
//! `binary 'true'` column values), as a replication stream carries them in `XLogData`
//! (PostgreSQL's documentation, "Logical Replication Message Formats"). Begin and Commit are
//! decoded too, for streams that do not separate them. Every read is bounds-checked: a short
//! or malformed message is an error naming what was missing, never a panic.

/// One column value of a tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// A TOASTed value that did not change (an UPDATE without REPLICA IDENTITY FULL): the
    /// value is not sent.
    UnchangedToast,
    /// The value in the text format.
    Text(Vec<u8>),
    /// The value in the binary format of its type (`binary 'true'`).
    Binary(Vec<u8>),
}

/// A column of a relation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (the key, by default the primary key).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: u64,
        /// Microseconds since 2000-01-01.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    },
    Origin {
        lsn: u64,
        name: String,
    },
    /// Sent before the first change of a relation in a session and after it changes.
    Relation {
        id: u32,
        namespace: String,
        name: String,
        /// `d` default, `n` nothing, `f` full, `i` index.
        replica_identity: u8,
        columns: Vec<RelationColumn>,
    },
    Type {
        id: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        /// The old key (`K`) or, with REPLICA IDENTITY FULL, the whole old row (`O`).
        old: Option<Vec<Datum>>,
        key_only: bool,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: Vec<Datum>,
        key_only: bool,
    },
    Truncate {
        /// 1: CASCADE, 2: RESTART IDENTITY.
        options: u8,
        relations: Vec<u32>,
    },
    /// `pg_logical_emit_message()`.
    LogicalMessage {
        transactional: bool,
        lsn: u64,
        prefix: String,
        content: Vec<u8>,
    },
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let out = &self.bytes[self.at..end];
                self.at = end;
                Ok(out)
            }
            None => Err(format!(
                "message ends at byte {} where {what} needs {n} more",
                self.bytes.len()
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// A NUL-terminated string.
    fn cstring(&mut self, what: &str) -> Result<String, String> {
        let rest = &self.bytes[self.at.min(self.bytes.len())..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| format!("{what} has no terminating NUL"))?;
        let text = String::from_utf8(rest[..len].to_vec())
            .map_err(|_| format!("{what} is not valid UTF-8"))?;
        self.at += len + 1;
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, String> {
        let n = self.u16("the tuple's column count")?;
        let mut datums = Vec::with_capacity(usize::from(n));
        for i in 0..n {
            let kind = self.u8("a column's kind")?;
            datums.push(match kind {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' | b'b' => {
                    let len = self.u32("a column's length")? as usize;
                    let bytes = self.take(len, "a column's value")?.to_vec();
                    if kind == b't' {
                        Datum::Text(bytes)
                    } else {
                        Datum::Binary(bytes)
                    }
                }
                other => {
                    return Err(format!(
                        "column {i} of a tuple has unknown kind {:?}",
                        other as char
                    ))
                }
            });
        }
        Ok(datums)
    }

    fn done(&self, what: &str) -> Result<(), String> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(format!(
                "{what} message has {} bytes after its end",
                self.bytes.len() - self.at
            ))
        }
    }
}

/// Decodes one pgoutput message.
pub fn decode(bytes: &[u8]) -> Result<Message, String> {
    let mut r = Reader { bytes, at: 0 };
    let tag = r.u8("the message tag")?;
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64("Begin's LSN")?,
            commit_time: r.i64("Begin's commit time")?,
            xid: r.u32("Begin's xid")?,
        },
        b'C' => Message::Commit {
            flags: r.u8("Commit's flags")?,
            commit_lsn: r.u64("Commit's LSN")?,
            end_lsn: r.u64("Commit's end LSN")?,
            commit_time: r.i64("Commit's time")?,
        },
        b'O' => Message::Origin {
            lsn: r.u64("Origin's LSN")?,
            name: r.cstring("Origin's name")?,
        },
        b'R' => {
            let id = r.u32("Relation's id")?;
            let namespace = r.cstring("Relation's namespace")?;
            let name = r.cstring("Relation's name")?;
            let replica_identity = r.u8("Relation's replica identity")?;
            let n = r.u16("Relation's column count")?;
            let mut columns = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                columns.push(RelationColumn {
                    key: r.u8("a column's flags")? & 1 == 1,
                    name: r.cstring("a column's name")?,
                    type_oid: r.u32("a column's type")?,
                    type_modifier: r.i32("a column's type modifier")?,
                });
            }
            Message::Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
            }
        }
        b'Y' => Message::Type {
            id: r.u32("Type's id")?,
            namespace: r.cstring("Type's namespace")?,
            name: r.cstring("Type's name")?,
        },
        b'I' => {
            let relation = r.u32("Insert's relation")?;
            match r.u8("Insert's tuple tag")? {
                b'N' => Message::Insert {
                    relation,
                    new: r.tuple()?,
                },
                other => return Err(format!("Insert with tuple tag {:?}", other as char)),
            }
        }
        b'U' => {
            let relation = r.u32("Update's relation")?;
            let (old, key_only) = match r.u8("Update's tuple tag")? {
                b'K' => (Some(r.tuple()?), true),
                b'O' => (Some(r.tuple()?), false),
                b'N' => (None, false),
                other => return Err(format!("Update with tuple tag {:?}", other as char)),
            };
            if old.is_some() && r.u8("Update's new tuple tag")? != b'N' {
                return Err("Update without its new tuple".into());
            }
            Message::Update {
                relation,
                old,
                key_only,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32("Delete's relation")?;
            let key_only = match r.u8("Delete's tuple tag")? {
                b'K' => true,
                b'O' => false,
                other => return Err(format!("Delete with tuple tag {:?}", other as char)),
            };
            Message::Delete {
                relation,
                old: r.tuple()?,
                key_only,
            }
        }
        b'T' => {
            let n = r.u32("Truncate's relation count")?;
            let options = r.u8("Truncate's options")?;
            let mut relations = Vec::new();
            for _ in 0..n {
                relations.push(r.u32("a truncated relation")?);
            }
            Message::Truncate { options, relations }
        }
        b'M' => {
            let transactional = r.u8("Message's flags")? & 1 == 1;
            let lsn = r.u64("Message's LSN")?;
            let prefix = r.cstring("Message's prefix")?;
            let len = r.u32("Message's length")? as usize;
            Message::LogicalMessage {
                transactional,
                lsn,
                prefix,
                content: r.take(len, "Message's content")?.to_vec(),
            }
        }
        other => return Err(format!("unknown pgoutput message {:?}", other as char)),
    };
    r.done(&format!("a {:?}", tag as char))?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relation of `CREATE TABLE cdc_t (id SERIAL PRIMARY KEY, name TEXT, amount
    /// NUMERIC(10,2))` as PostgreSQL 15 sent it.
    fn relation_bytes() -> Vec<u8> {
        let mut b = vec![b'R', 0, 0, 0x40, 0x01];
        b.extend_from_slice(b"public\0cdc_t\0");
        b.push(b'f');
        b.extend_from_slice(&[0, 3]);
        b.extend_from_slice(&[1]);
        b.extend_from_slice(b"id\0");
        b.extend_from_slice(&[0, 0, 0, 0x17, 0xff, 0xff, 0xff, 0xff]);
        b.extend_from_slice(&[1]);
        b.extend_from_slice(b"name\0");
        b.extend_from_slice(&[0, 0, 0, 0x19, 0xff, 0xff, 0xff, 0xff]);
        b.extend_from_slice(&[1]);
        b.extend_from_slice(b"amount\0");
        b.extend_from_slice(&[0, 0, 0x06, 0xa4, 0x00, 0x0a, 0x00, 0x06]);
        b
    }

    #[test]
    fn decodes_what_postgresql_sent() {
        match decode(&relation_bytes()).unwrap() {
            Message::Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
            } => {
                assert_eq!(
                    (id, namespace.as_str(), name.as_str()),
                    (16385, "public", "cdc_t")
                );
                assert_eq!(replica_identity, b'f');
                let names: Vec<_> = columns.iter().map(|c| c.name.as_str()).collect();
                assert_eq!(names, ["id", "name", "amount"]);
                assert_eq!(columns[2].type_oid, 1700);
                assert_eq!(columns[0].type_modifier, -1);
            }
            other => panic!("{other:?}"),
        }
        // INSERT INTO cdc_t (name, amount) VALUES ('a', 1.5), with binary values.
        let insert = [
            0x49, 0x00, 0x00, 0x40, 0x01, 0x4e, 0x00, 0x03, 0x62, 0x00, 0x00, 0x00, 0x04, 0x00,
            0x00, 0x00, 0x01, 0x62, 0x00, 0x00, 0x00, 0x01, 0x61, 0x62, 0x00, 0x00, 0x00, 0x0c,
            0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x13, 0x88,
        ];
        assert_eq!(
            decode(&insert).unwrap(),
            Message::Insert {
                relation: 16385,
                new: vec![
                    Datum::Binary(vec![0, 0, 0, 1]),
                    Datum::Binary(b"a".to_vec()),
                    Datum::Binary(vec![0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x13, 0x88]),
                ],
            }
        );
        // DELETE with REPLICA IDENTITY FULL: the old row, a NULL amount.
        let delete = [
            0x44, 0x00, 0x00, 0x40, 0x01, 0x4f, 0x00, 0x03, 0x62, 0x00, 0x00, 0x00, 0x04, 0x00,
            0x00, 0x00, 0x02, 0x62, 0x00, 0x00, 0x00, 0x01, 0x62, 0x6e,
        ];
        assert_eq!(
            decode(&delete).unwrap(),
            Message::Delete {
                relation: 16385,
                old: vec![
                    Datum::Binary(vec![0, 0, 0, 2]),
                    Datum::Binary(b"b".to_vec()),
                    Datum::Null,
                ],
                key_only: false,
            }
        );
    }

    #[test]
    fn updates_truncates_and_transactions() {
        let mut update = vec![b'U', 0, 0, 0, 7, b'K', 0, 1, b't', 0, 0, 0, 1, b'1'];
        update.extend_from_slice(&[b'N', 0, 2, b't', 0, 0, 0, 1, b'1', b'u']);
        assert_eq!(
            decode(&update).unwrap(),
            Message::Update {
                relation: 7,
                old: Some(vec![Datum::Text(b"1".to_vec())]),
                key_only: true,
                new: vec![Datum::Text(b"1".to_vec()), Datum::UnchangedToast],
            }
        );
        let plain = [b'U', 0, 0, 0, 7, b'N', 0, 1, b'n'];
        assert!(matches!(
            decode(&plain).unwrap(),
            Message::Update { old: None, .. }
        ));
        let truncate = [b'T', 0, 0, 0, 2, 1, 0, 0, 0, 7, 0, 0, 0, 8];
        assert_eq!(
            decode(&truncate).unwrap(),
            Message::Truncate {
                options: 1,
                relations: vec![7, 8]
            }
        );
        let mut begin = vec![b'B'];
        begin.extend_from_slice(&0x153DEF8u64.to_be_bytes());
        begin.extend_from_slice(&5i64.to_be_bytes());
        begin.extend_from_slice(&725u32.to_be_bytes());
        assert_eq!(
            decode(&begin).unwrap(),
            Message::Begin {
                final_lsn: 0x153DEF8,
                commit_time: 5,
                xid: 725
            }
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let relation = relation_bytes();
        for cut in 0..relation.len() {
            assert!(decode(&relation[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(b"Z")
            .unwrap_err()
            .contains("unknown pgoutput message"));
        assert!(decode(&[b'I', 0, 0, 0, 1, b'N', 0, 1, b'x'])
            .unwrap_err()
            .contains("unknown kind"));
        // A length far past the end.
        assert!(decode(&[b'I', 0, 0, 0, 1, b'N', 0, 1, b't', 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut trailing = relation.clone();
        trailing.push(0);
        assert!(decode(&trailing).unwrap_err().contains("after its end"));
    }
}
