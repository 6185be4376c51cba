//! `labboot board …`: the boards of a running appliance, through its HTTP API
//! (`appliance/API.md`): list and show them, approve unknown ones, switch their power and
//! maintenance mode.

use anyhow::anyhow;
use serde_json::{json, Value};

use crate::client::table::{self, Table};
use crate::client::{encode, ignore_closed_stdout, ApiArgs, ApiClient, Out, API_PREFIX};

/// `labboot board …` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BoardCommand {
    /// List the boards: state, health, approval, address, last check-in and current job.
    List,
    /// Show one board: its fields, what its agent reported and its latest events.
    Show {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
    },
    /// Approve a board that checked in with an unknown identity (health "pending").
    Approve {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        /// The device type to give the board.
        #[arg(long, value_name = "TYPE")]
        device_type: Option<String>,
    },
    /// Switch a board's power on or off, or cycle it (refused while a job runs).
    Power {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        /// What to do with the power.
        #[arg(value_enum)]
        action: PowerAction,
    },
    /// Put a board into maintenance (it stops at the U-Boot prompt) or back to idle (refused
    /// while a job runs).
    Maintenance {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        /// `on` enters maintenance, `off` leaves it.
        #[arg(value_enum)]
        mode: OnOff,
    },
}

/// What `board power` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PowerAction {
    /// Switch the power on.
    On,
    /// Switch the power off.
    Off,
    /// Switch the power off, then on.
    Cycle,
}

impl PowerAction {
    /// The action's name in the API path.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Cycle => "cycle",
        }
    }
}

/// `on` or `off`, as `board maintenance` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Enter maintenance.
    On,
    /// Leave maintenance.
    Off,
}

impl OnOff {
    /// The mode's name in the API path.
    pub fn as_str(self) -> &'static str {
        match self {
            OnOff::On => "on",
            OnOff::Off => "off",
        }
    }
}

/// Runs `labboot board …`.
pub fn run(api: ApiArgs, c: BoardCommand) -> anyhow::Result<()> {
    let client = ApiClient::from_args(&api)?;
    let mut out = Out::stdout();
    ignore_closed_stdout(execute(&client, &mut out, api.json, c))
}

fn execute(client: &ApiClient, out: &mut Out, json: bool, c: BoardCommand) -> anyhow::Result<()> {
    match c {
        BoardCommand::List => {
            let boards: Value = client.get_json("/boards")?;
            if json {
                return out.json(&boards);
            }
            let list = boards
                .as_array()
                .ok_or_else(|| anyhow!("GET {API_PREFIX}/boards: the answer is not a list"))?;
            out.text(&boards_table(list).render())
        }
        BoardCommand::Show { id } => {
            let board: Value = client.get_json(&format!("/boards/{}", encode(&id)))?;
            if json {
                out.json(&board)
            } else {
                out.text(&board_text(&board))
            }
        }
        BoardCommand::Approve { id, device_type } => {
            let body = match device_type {
                Some(t) => json!({ "device_type": t }),
                None => json!({}),
            };
            let board: Value =
                client.post_json(&format!("/boards/{}/approve", encode(&id)), &body)?;
            if json {
                return out.json(&board);
            }
            let mut line = format!("board {} approved", table::get(&board, "id"));
            if let Some(t) = board.get("device_type").and_then(Value::as_str) {
                line.push_str(&format!(" ({t})"));
            }
            out.line(&table::clean(&line))
        }
        BoardCommand::Power { id, action } => {
            let path = format!("/boards/{}/power/{}", encode(&id), action.as_str());
            let answer: Value = client.post_empty(&path)?;
            if json {
                return out.json(&answer);
            }
            let power = match answer.get("power") {
                Some(Value::Null) | None => action.as_str().to_string(),
                other => table::cell(other),
            };
            out.line(&table::clean(&format!("board {id}: power {power}")))
        }
        BoardCommand::Maintenance { id, mode } => {
            let path = format!("/boards/{}/maintenance/{}", encode(&id), mode.as_str());
            let board: Value = client.post_empty(&path)?;
            if json {
                return out.json(&board);
            }
            out.line(&state_line(&board))
        }
    }
}

/// `board qemu-01: maintenance, online`.
fn state_line(board: &Value) -> String {
    format!(
        "board {}: {}, {}",
        table::get(board, "id"),
        table::get(board, "state"),
        table::get(board, "health")
    )
}

/// The boards as a table: ID, DEVICE TYPE, STATE, HEALTH, APPROVED, ADDRESS, LAST CHECK-IN,
/// JOB.
fn boards_table(boards: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "DEVICE TYPE",
        "STATE",
        "HEALTH",
        "APPROVED",
        "ADDRESS",
        "LAST CHECK-IN",
        "JOB",
    ]);
    for board in boards {
        t.row(
            [
                "id",
                "device_type",
                "state",
                "health",
                "approved",
                "address",
                "last_checkin",
                "current_job",
            ]
            .iter()
            .map(|k| table::get(board, k))
            .collect(),
        );
    }
    t
}

/// A board's `key: value` lines, then its events (time, kind, message) as a table.
fn board_text(board: &Value) -> String {
    let info = board.get("info").cloned().unwrap_or(Value::Null);
    let memory = match info.get("memory_kb").and_then(Value::as_u64) {
        Some(kb) => format!("{kb} kB"),
        None => table::get(&info, "memory_kb"),
    };
    let pairs = vec![
        ("id", table::get(board, "id")),
        ("device type", table::get(board, "device_type")),
        ("state", table::get(board, "state")),
        ("health", table::get(board, "health")),
        ("approved", table::get(board, "approved")),
        ("from config", table::get(board, "from_config")),
        ("mac", table::get(board, "mac")),
        ("address", table::get(board, "address")),
        ("cloned", table::get(board, "cloned")),
        ("current job", table::get(board, "current_job")),
        ("last check-in", table::get(board, "last_checkin")),
        ("kernel", table::get(&info, "kernel")),
        ("cpus", table::get(&info, "cpus")),
        ("memory", memory),
        ("macs", table::get(&info, "macs")),
        ("addresses", table::get(&info, "addresses")),
    ];
    let mut text = table::fields(&pairs);
    let events = board
        .get("events")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if events.is_empty() {
        text.push_str("\nno events\n");
    } else {
        let mut t = Table::new(&["TIME", "KIND", "MESSAGE"]);
        for event in events {
            t.row(
                ["time", "kind", "message"]
                    .iter()
                    .map(|k| table::get(event, k))
                    .collect(),
            );
        }
        text.push('\n');
        text.push_str(&t.render());
    }
    text
}

#[cfg(test)]
mod client_tests {
    use super::*;
    use crate::client::testing::{answer, fake_server, header, Captured};
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: BoardCommand,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("board").chain(args.iter().copied()))
    }

    #[test]
    fn client_board_arguments() {
        Cli::command().debug_assert();
        assert!(matches!(
            parse(&["list", "--json"]).unwrap().command,
            BoardCommand::List
        ));
        assert!(matches!(
            parse(&["show", "qemu-01"]).unwrap().command,
            BoardCommand::Show { ref id } if id == "qemu-01"
        ));
        assert!(matches!(
            parse(&["approve", "b1", "--device-type", "rpi4"]).unwrap().command,
            BoardCommand::Approve { ref device_type, .. } if device_type.as_deref() == Some("rpi4")
        ));
        assert!(matches!(
            parse(&["power", "b1", "cycle"]).unwrap().command,
            BoardCommand::Power {
                action: PowerAction::Cycle,
                ..
            }
        ));
        assert!(matches!(
            parse(&["maintenance", "b1", "off", "--server", "x"])
                .unwrap()
                .command,
            BoardCommand::Maintenance {
                mode: OnOff::Off,
                ..
            }
        ));
        for bad in [
            &["power", "b1", "reset"][..],
            &["maintenance", "b1"],
            &["show", ""],
            &["show"],
            &["frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_board_wired_into_labboot() {
        let cli = crate::cli::Cli::try_parse_from([
            "labboot", "board", "power", "b1", "on", "--token", "t",
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::Board { api, command } => {
                assert_eq!(api.token.as_deref(), Some("t"));
                assert!(matches!(
                    command,
                    BoardCommand::Power {
                        action: PowerAction::On,
                        ..
                    }
                ));
            }
            other => panic!("{other:?}"),
        }
    }

    fn boards() -> Value {
        json!([
            {"id": "qemu-01", "device_type": "labboot-qemu-arm64", "state": "idle", "health": "online",
             "approved": true, "from_config": true, "mac": "02:00:00:00:00:01", "address": "10.78.0.50",
             "cloned": null, "current_job": null, "last_checkin": "2026-12-04T13:00:00Z",
             "info": {"kernel": "6.1.0", "cpus": 2, "memory_kb": 1000000, "macs": ["02:00:00:00:00:01"],
                      "addresses": ["10.78.0.50", "fe80::1"]}},
            {"id": "new-board", "device_type": null, "state": "idle", "health": "pending",
             "approved": false, "address": null, "last_checkin": null, "current_job": 12}
        ])
    }

    #[test]
    fn client_board_table() {
        assert_eq!(
            boards_table(boards().as_array().unwrap()).render(),
            "ID         DEVICE TYPE         STATE  HEALTH   APPROVED  ADDRESS     LAST CHECK-IN         JOB\n\
             qemu-01    labboot-qemu-arm64  idle   online   yes       10.78.0.50  2026-12-04T13:00:00Z  -\n\
             new-board  -                   idle   pending  no        -           -                     12\n"
        );
    }

    #[test]
    fn client_board_show_text() {
        let mut board = boards()[0].clone();
        board["events"] = json!([
            {"time": "2026-12-04T12:59:00Z", "kind": "checkin", "message": "first check-in"},
            {"time": "2026-12-04T13:00:00Z", "kind": "power", "message": "cycle\nby admin"}
        ]);
        let text = board_text(&board);
        assert!(
            text.starts_with("id:            qemu-01\ndevice type:   labboot-qemu-arm64\n"),
            "{text}"
        );
        assert!(text.contains("\napproved:      yes\n"), "{text}");
        assert!(text.contains("\ncloned:        -\n"), "{text}");
        assert!(text.contains("\nmemory:        1000000 kB\n"), "{text}");
        assert!(
            text.contains("\naddresses:     10.78.0.50, fe80::1\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\n\nTIME                  KIND     MESSAGE\n\
                 2026-12-04T12:59:00Z  checkin  first check-in\n\
                 2026-12-04T13:00:00Z  power    cycle by admin\n"
            ),
            "{text}"
        );
        let text = board_text(&boards()[1]);
        assert!(text.contains("\nkernel:        -\n"), "{text}");
        assert!(text.ends_with("\n\nno events\n"), "{text}");
    }

    #[test]
    fn client_board_actions() {
        let (url, heads) = fake_server(vec![
            answer(
                "200 OK",
                "application/json",
                &json!({"id": "new-board", "device_type": "rpi4", "state": "idle", "approved": true}).to_string(),
            ),
            answer("200 OK", "application/json", r#"{"board": "b1", "power": "cycle"}"#),
            answer("409 Conflict", "application/json", r#"{"error": "board b1 runs job 12"}"#),
            answer("200 OK", "application/json", r#"{"id": "b1", "state": "maintenance", "health": "online"}"#),
        ]);
        let client = ApiClient::new(&url, Some("t")).unwrap();
        let captured = Captured::default();
        let mut out = captured.out();
        let approve = BoardCommand::Approve {
            id: "new-board".into(),
            device_type: Some("rpi4".into()),
        };
        execute(&client, &mut out, false, approve).unwrap();
        let head = heads.recv().unwrap();
        assert!(
            head.starts_with("POST /api/v1/boards/new-board/approve "),
            "{head}"
        );
        assert_eq!(header(&head, "content-type"), Some("application/json"));
        assert!(head.ends_with(r#"{"device_type":"rpi4"}"#), "{head}");
        execute(
            &client,
            &mut out,
            false,
            BoardCommand::Power {
                id: "b1".into(),
                action: PowerAction::Cycle,
            },
        )
        .unwrap();
        assert!(heads
            .recv()
            .unwrap()
            .starts_with("POST /api/v1/boards/b1/power/cycle "));
        let err = execute(
            &client,
            &mut out,
            false,
            BoardCommand::Power {
                id: "b1".into(),
                action: PowerAction::Off,
            },
        )
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "POST /api/v1/boards/b1/power/off: 409: board b1 runs job 12"
        );
        execute(
            &client,
            &mut out,
            false,
            BoardCommand::Maintenance {
                id: "b1".into(),
                mode: OnOff::On,
            },
        )
        .unwrap();
        assert!(heads
            .recv()
            .unwrap()
            .starts_with("POST /api/v1/boards/b1/power/off "));
        assert!(heads
            .recv()
            .unwrap()
            .starts_with("POST /api/v1/boards/b1/maintenance/on "));
        assert_eq!(
            captured.text(),
            "board new-board approved (rpi4)\nboard b1: power cycle\nboard b1: maintenance, online\n"
        );
    }
}
