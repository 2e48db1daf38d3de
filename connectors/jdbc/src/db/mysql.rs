//! MariaDB/MySQL values: a column's Connect kind from its type and flags, values read into
//! cells, cells as parameters.

use mysql_async::consts::{ColumnFlags, ColumnType};

use super::{Column, MICROS_PER_DAY};
use crate::value::{civil_from_micros, days_from_civil, Cell, Kind, NumericMapping};

/// Confluent's MySQL mapping, from the result set's column definition.
pub(super) fn my_column(c: &mysql_async::Column, mapping: NumericMapping) -> Column {
    let unsigned = c.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let binary = c.character_set() == 63;
    let kind = match c.column_type() {
        ColumnType::MYSQL_TYPE_TINY if unsigned => Some(Kind::Int16),
        ColumnType::MYSQL_TYPE_TINY => Some(Kind::Int8),
        ColumnType::MYSQL_TYPE_SHORT if unsigned => Some(Kind::Int32),
        ColumnType::MYSQL_TYPE_SHORT | ColumnType::MYSQL_TYPE_YEAR => Some(Kind::Int16),
        ColumnType::MYSQL_TYPE_INT24 | ColumnType::MYSQL_TYPE_LONG if unsigned => Some(Kind::Int64),
        ColumnType::MYSQL_TYPE_INT24 | ColumnType::MYSQL_TYPE_LONG => Some(Kind::Int32),
        ColumnType::MYSQL_TYPE_LONGLONG if unsigned => Some(Kind::Decimal {
            scale: 0,
            precision: Some(20),
        }),
        ColumnType::MYSQL_TYPE_LONGLONG => Some(Kind::Int64),
        ColumnType::MYSQL_TYPE_FLOAT => Some(Kind::Float32),
        ColumnType::MYSQL_TYPE_DOUBLE => Some(Kind::Float64),
        ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => {
            let scale = i32::from(c.decimals());
            // The display length counts a sign and a point.
            let precision = c
                .column_length()
                .saturating_sub(u32::from(scale > 0) + u32::from(!unsigned));
            Some(Kind::numeric(mapping, Some(precision), Some(scale)))
        }
        ColumnType::MYSQL_TYPE_BIT if c.column_length() == 1 => Some(Kind::Int8),
        ColumnType::MYSQL_TYPE_BIT => Some(Kind::Bytes),
        ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => Some(Kind::Date),
        ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2 => Some(Kind::Time),
        ColumnType::MYSQL_TYPE_DATETIME
        | ColumnType::MYSQL_TYPE_DATETIME2
        | ColumnType::MYSQL_TYPE_TIMESTAMP
        | ColumnType::MYSQL_TYPE_TIMESTAMP2 => Some(Kind::Timestamp),
        ColumnType::MYSQL_TYPE_JSON | ColumnType::MYSQL_TYPE_ENUM | ColumnType::MYSQL_TYPE_SET => {
            Some(Kind::String)
        }
        ColumnType::MYSQL_TYPE_VARCHAR
        | ColumnType::MYSQL_TYPE_VAR_STRING
        | ColumnType::MYSQL_TYPE_STRING
        | ColumnType::MYSQL_TYPE_TINY_BLOB
        | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
        | ColumnType::MYSQL_TYPE_LONG_BLOB
        | ColumnType::MYSQL_TYPE_BLOB => Some(if binary { Kind::Bytes } else { Kind::String }),
        _ => None,
    };
    Column {
        name: c.name_str().into_owned(),
        kind,
        optional: !c.flags().contains(ColumnFlags::NOT_NULL_FLAG),
        type_name: format!("{:?}", c.column_type())
            .trim_start_matches("MYSQL_TYPE_")
            .to_string(),
    }
}

pub(super) fn my_cell(value: mysql_async::Value, column: &Column) -> Result<Cell, String> {
    use mysql_async::Value as V;
    Ok(match (value, &column.kind) {
        (_, None) | (V::NULL, _) => Cell::Null,
        (V::Int(i), _) => Cell::Int(i),
        (V::UInt(u), _) => i64::try_from(u).map_or(Cell::UInt(u), Cell::Int),
        (V::Float(f), _) => Cell::Float32(f),
        (V::Double(d), _) => Cell::Float64(d),
        (V::Bytes(b), Some(Kind::Int8)) if column.type_name == "BIT" => {
            Cell::Int(b.iter().fold(0i64, |acc, &x| (acc << 8) | i64::from(x)))
        }
        (V::Bytes(b), Some(Kind::Bytes)) => Cell::Bytes(b),
        (V::Bytes(b), Some(Kind::String)) => {
            Cell::Text(String::from_utf8(b).map_err(|_| "text is not valid UTF-8")?)
        }
        (V::Bytes(b), Some(_)) => {
            // DECIMAL (and anything else sent as text).
            Cell::Decimal(String::from_utf8(b).map_err(|_| "a number is not valid text")?)
        }
        (V::Date(y, m, d, h, mi, s, us), Some(kind)) => {
            if y == 0 && m == 0 && d == 0 {
                // MySQL's zero date has no value in Connect (Connector/J's
                // zeroDateTimeBehavior=convertToNull).
                return Ok(Cell::Null);
            }
            let days = days_from_civil(i32::from(y), u32::from(m), u32::from(d))
                .ok_or_else(|| format!("invalid date {y}-{m}-{d}"))?;
            if *kind == Kind::Date {
                Cell::Date(days)
            } else {
                Cell::Timestamp(
                    i64::from(days) * MICROS_PER_DAY
                        + (i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s)) * 1_000_000
                        + i64::from(us),
                )
            }
        }
        (V::Time(negative, days, h, m, s, us), _) => {
            let micros =
                ((i64::from(days) * 24 + i64::from(h)) * 3600 + i64::from(m) * 60 + i64::from(s))
                    * 1_000_000
                    + i64::from(us);
            Cell::Time(if negative { -micros } else { micros })
        }
    })
}

pub(super) fn my_param(cell: &Cell) -> mysql_async::Value {
    use mysql_async::Value as V;
    match cell {
        Cell::Null => V::NULL,
        Cell::Bool(b) => V::Int(i64::from(*b)),
        Cell::Int(i) => V::Int(*i),
        Cell::UInt(u) => V::UInt(*u),
        Cell::Float32(f) => V::Float(*f),
        Cell::Float64(f) => V::Double(*f),
        Cell::Decimal(s) | Cell::Text(s) => V::Bytes(s.clone().into_bytes()),
        Cell::Bytes(b) => V::Bytes(b.clone()),
        Cell::Date(days) => {
            let date = civil_from_micros(i64::from(*days) * MICROS_PER_DAY);
            match date {
                Some(t) => {
                    use chrono::Datelike;
                    V::Date(t.year() as u16, t.month() as u8, t.day() as u8, 0, 0, 0, 0)
                }
                None => V::NULL,
            }
        }
        Cell::Time(us) => {
            let negative = *us < 0;
            let us = us.unsigned_abs();
            let secs = us / 1_000_000;
            V::Time(
                negative,
                (secs / 86_400) as u32,
                ((secs / 3600) % 24) as u8,
                ((secs / 60) % 60) as u8,
                (secs % 60) as u8,
                (us % 1_000_000) as u32,
            )
        }
        Cell::Timestamp(us) => match civil_from_micros(*us) {
            Some(t) => {
                use chrono::{Datelike, Timelike};
                V::Date(
                    t.year() as u16,
                    t.month() as u8,
                    t.day() as u8,
                    t.hour() as u8,
                    t.minute() as u8,
                    t.second() as u8,
                    t.nanosecond() / 1000,
                )
            }
            None => V::NULL,
        },
    }
}
