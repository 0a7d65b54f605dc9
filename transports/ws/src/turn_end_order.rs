//! Keeps a `Stop` report behind the replies its agent sent before it.
//!
//! The report arrives on a connection of its own (Claude Code's `Stop` hook), the replies on the plugin's.
//! Two sockets keep no order between them: on a busy bridge the report can be read before a reply the
//! plugin wrote earlier, and the turn would end with the hook's last words instead of the answer. So the
//! plugin's connection holds a report back and pings its plugin: frames on one connection stay in order,
//! and the plugin answers the ping after everything it had already sent, so by the time the pong is read
//! every earlier reply has been relayed. A report for a message whose final reply was already relayed
//! needs no such wait, which keeps the usual turn (reply, then `Stop`) free of the round trip.

use std::collections::VecDeque;
use std::time::Instant;

use synthesis_bridge::transport::{ReplyFrame, TurnEnd};

/// The reports one plugin connection holds back, and the pings and pongs that release them.
#[derive(Debug, Default)]
pub(crate) struct TurnEndOrder {
    pings_sent: u64,
    pongs_seen: u64,
    /// Reports in arrival order, each with the number of pongs that releases it and when it came.
    held: VecDeque<(u64, Instant, TurnEnd)>,
    /// The message whose final reply was relayed last.
    last_answered: Option<String>,
}

impl TurnEndOrder {
    /// Notes a reply relayed to the backend.
    pub(crate) fn relayed(&mut self, frame: &ReplyFrame) {
        if frame.last && frame.message_id.is_some() {
            self.last_answered.clone_from(&frame.message_id);
        }
    }

    /// Takes a report in. Returns it when it can be delivered now; otherwise it is held, and the caller
    /// must send a ping at once (already counted).
    #[must_use]
    pub(crate) fn report(&mut self, end: TurnEnd) -> Option<TurnEnd> {
        let answered = end.message_id.is_some() && end.message_id == self.last_answered;
        if answered && self.held.is_empty() {
            return Some(end);
        }
        self.pings_sent += 1;
        self.held.push_back((self.pings_sent, Instant::now(), end));
        None
    }

    /// Counts a ping sent for another reason (the liveness check), so that pongs keep lining up.
    pub(crate) fn pinged(&mut self) {
        self.pings_sent += 1;
    }

    /// A pong arrived: the reports it releases, oldest first.
    pub(crate) fn ponged(&mut self) -> impl Iterator<Item = TurnEnd> + '_ {
        // A pong nobody asked for must not stand in for the answer to a ping sent later.
        self.pongs_seen = (self.pongs_seen + 1).min(self.pings_sent);
        let released = self
            .held
            .iter()
            .take_while(|(needed, ..)| *needed <= self.pongs_seen)
            .count();
        self.held.drain(..released).map(|(.., end)| end)
    }

    /// Every report still held, oldest first (the connection is over; no pong will come).
    pub(crate) fn release_all(&mut self) -> impl Iterator<Item = TurnEnd> + '_ {
        self.held.drain(..).map(|(.., end)| end)
    }

    /// When the oldest report still held came in: a plugin that leaves it there for long does not answer
    /// pings, however many other frames it sends.
    pub(crate) fn holding_since(&self) -> Option<Instant> {
        self.held.front().map(|(_, since, _)| *since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(id: &str) -> TurnEnd {
        TurnEnd::new(Some(id.to_owned()), Some("done".to_owned()))
    }

    fn ids(ends: impl Iterator<Item = TurnEnd>) -> Vec<String> {
        ends.map(|end| end.message_id.unwrap_or_default()).collect()
    }

    fn final_reply(id: &str) -> ReplyFrame {
        ReplyFrame {
            message_id: Some(id.to_owned()),
            ..ReplyFrame::last("answer")
        }
    }

    #[test]
    fn a_report_after_its_final_reply_goes_at_once() {
        let mut order = TurnEndOrder::default();
        order.relayed(&final_reply("m1"));
        assert_eq!(order.report(end("m1")), Some(end("m1")));
    }

    #[test]
    fn a_report_ahead_of_its_reply_waits_for_the_pong_to_its_own_ping() {
        let mut order = TurnEndOrder::default();
        order.pinged(); // a liveness ping is out when the report comes
        assert_eq!(order.report(end("m1")), None);
        assert!(
            ids(order.ponged()).is_empty(),
            "that was the earlier ping's pong"
        );
        assert_eq!(ids(order.ponged()), ["m1"]);
    }

    #[test]
    fn a_pong_nobody_asked_for_does_not_answer_a_later_ping() {
        let mut order = TurnEndOrder::default();
        assert!(ids(order.ponged()).is_empty(), "an unasked pong");
        order.pinged();
        assert_eq!(order.report(end("m1")), None);
        assert!(
            ids(order.ponged()).is_empty(),
            "that answers the liveness ping, not the report's"
        );
        assert_eq!(ids(order.ponged()), ["m1"]);
    }

    #[test]
    fn a_partial_reply_or_an_unnamed_report_does_not_count_as_answered() {
        let mut order = TurnEndOrder::default();
        order.relayed(&ReplyFrame {
            message_id: Some("m1".into()),
            ..ReplyFrame::partial("half")
        });
        assert_eq!(order.report(end("m1")), None);
        order.relayed(&final_reply("m2"));
        assert_eq!(order.report(TurnEnd::new(None, None)), None);
    }

    #[test]
    fn reports_leave_in_the_order_they_came() {
        let mut order = TurnEndOrder::default();
        assert_eq!(order.report(end("m1")), None);
        order.relayed(&final_reply("m2"));
        // Answered, but an earlier report is still held: it must not overtake it.
        assert_eq!(order.report(end("m2")), None);
        assert_eq!(ids(order.ponged()), ["m1"]);
        assert_eq!(ids(order.ponged()), ["m2"]);
    }

    #[test]
    fn an_ended_connection_releases_what_it_held() {
        let mut order = TurnEndOrder::default();
        assert_eq!(order.report(end("m1")), None);
        assert_eq!(order.report(end("m2")), None);
        assert_eq!(ids(order.release_all()), ["m1", "m2"]);
        assert!(ids(order.ponged()).is_empty());
    }
}
