//! The lowercase names the store's enums are kept as in a TEXT column, shared by every backend
//! (the schemas' `CHECK` constraints list the same names).

use super::{BoardState, Health, JobHealth, JobState, Powered};

/// An enum stored as its lowercase name.
pub(crate) trait SqlName: Sized + 'static {
    /// The enum's type name, for error messages.
    const TYPE: &'static str;
    /// Its name in the database.
    fn sql_name(&self) -> &'static str;
    /// The variant stored as `name`, if any.
    fn from_sql_name(name: &str) -> Option<Self>;
    /// The variant stored as `name`, or the message that says what is wrong with it.
    fn parse_sql_name(name: &str) -> Result<Self, String> {
        Self::from_sql_name(name).ok_or_else(|| format!("'{name}' is not a {}", Self::TYPE))
    }
}

/// Implements [`SqlName`] for an enum from its variants' names.
macro_rules! sql_names {
    ($type:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl SqlName for $type {
            const TYPE: &'static str = stringify!($type);

            fn sql_name(&self) -> &'static str {
                match self {
                    $($type::$variant => $name,)+
                }
            }

            fn from_sql_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some($type::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

sql_names!(BoardState { Idle => "idle", Job => "job", Maintenance => "maintenance" });
sql_names!(Health {
    Unknown => "unknown",
    Online => "online",
    Offline => "offline",
    Pending => "pending",
    Cloned => "cloned",
});
sql_names!(Powered { On => "on", Off => "off", Unknown => "unknown" });
sql_names!(JobState {
    Queued => "queued",
    Running => "running",
    Canceling => "canceling",
    Finished => "finished",
});
sql_names!(JobHealth {
    Unknown => "unknown",
    Complete => "complete",
    Incomplete => "incomplete",
    Canceled => "canceled",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip_and_refuse_strangers() {
        for state in [
            JobState::Queued,
            JobState::Running,
            JobState::Canceling,
            JobState::Finished,
        ] {
            assert_eq!(JobState::from_sql_name(state.sql_name()), Some(state));
        }
        assert_eq!(JobHealth::Incomplete.sql_name(), "incomplete");
        assert_eq!(Powered::parse_sql_name("off"), Ok(Powered::Off));
        assert_eq!(
            BoardState::parse_sql_name("sideways"),
            Err("'sideways' is not a BoardState".to_string())
        );
        assert_eq!(Health::from_sql_name("Online"), None, "names are lowercase");
    }
}
