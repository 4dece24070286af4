//! Dynamic SQL with `$n` placeholders. sqlx's `QueryBuilder` writes `?` for the `Any` driver,
//! which Postgres rejects.

use sqlx::any::{Any, AnyArguments};
use sqlx::{Arguments, AssertSqlSafe, Encode, Type};

pub(super) struct Sql {
    text: String,
    args: AnyArguments,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_string(),
            args: AnyArguments::default(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind<'t, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'t, Any> + Type<Any> + 't,
    {
        // Encoding into the Any buffer only fails for types Any cannot carry, a programming error.
        self.args
            .add(value)
            .expect("value of a type the Any driver supports");
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// Appends one placeholder per value, comma-separated (the inside of `IN (...)`).
    pub fn bind_list<'t, T>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self
    where
        T: Encode<'t, Any> + Type<Any> + 't,
    {
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
        self
    }

    pub fn query(self) -> sqlx::query::Query<'static, Any, AnyArguments> {
        sqlx::query_with(AssertSqlSafe(self.text), self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered() {
        let mut sql = Sql::new("SELECT 1 WHERE a = ");
        sql.bind(1_i64).push(" AND b = ").bind("x".to_string());
        assert_eq!(sql.text, "SELECT 1 WHERE a = $1 AND b = $2");
        assert_eq!(sql.args.len(), 2);
    }

    #[test]
    fn a_list_binds_each_value() {
        let mut sql = Sql::new("SELECT 1 WHERE a = ");
        sql.bind(1_i64)
            .push(" AND b IN (")
            .bind_list([2_i64, 3, 4])
            .push(")");
        assert_eq!(sql.text, "SELECT 1 WHERE a = $1 AND b IN ($2, $3, $4)");
        assert_eq!(sql.args.len(), 4);
    }
}
