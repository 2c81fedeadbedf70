//! `chorusctl tail`: print a topic's comments as they arrive.

use chorus_client::{ClientError, Event, Subscriber};

use crate::cli::{Cli, TailArgs};
use crate::failure::Failure;
use crate::output::{emit, event_json, event_line};

pub(crate) fn run(cli: &Cli, args: &TailArgs) -> Result<(), Failure> {
    let options = crate::client_options(cli)?;
    let mut subscriber =
        Subscriber::connect(&cli.server, args.topic.clone(), args.start(), options)
            .map_err(|e| Failure::client(&cli.server, e))?;

    let mut printed: u64 = 0;
    let mut reconnects = 0;
    while args.count.is_none_or(|count| printed < count) {
        let event = match subscriber.next_event() {
            Ok(event) => event,
            Err(ClientError::StreamChanged { old, new }) => {
                eprintln!(
                    "chorusctl: topic {} was deleted and created again (stream {old} is now \
                     {new}); continuing from offset {}",
                    args.topic,
                    subscriber.next_offset()
                );
                continue;
            }
            Err(e) => return Err(Failure::client(&cli.server, e)),
        };
        if subscriber.reconnects() != reconnects {
            reconnects = subscriber.reconnects();
            eprintln!(
                "chorusctl: reconnected to {}, resuming at offset {}",
                cli.server, event.offset
            );
        }
        print_event(cli, &subscriber, &event)?;
        printed += 1;
    }
    Ok(())
}

fn print_event(cli: &Cli, subscriber: &Subscriber, event: &Event) -> Result<(), Failure> {
    if cli.json {
        let value = event_json(subscriber.topic(), subscriber.stream(), event);
        emit(&value.to_string())
    } else {
        emit(&event_line(event))
    }
}
