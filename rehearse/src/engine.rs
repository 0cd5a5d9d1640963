//! The event loop: arrivals, upstream answers, ticks, polls and changes on one virtual
//! clock, each handed to the filter core exactly as Envoy's callbacks hand them over.

use crate::behaviour::{Rng, Timeline};
use crate::record::Recorder;
use crate::scenario::{Build, Scenario};
use crate::split::UserKey;
use crate::sim::{ClusterEntry, SimHost, SimStream, World};
use crate::RehearsalError;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use switchyard_filter_core::config::Config;
use switchyard_filter_core::host::{CalloutReply, Flow, Shared};
use switchyard_filter_core::ledger::{Board, Sharing};
use switchyard_filter_core::stream::Stream;
use switchyard_filter_core::worker::Worker;

const MS: u64 = 1_000_000;
const S: f64 = 1e9;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival,
    /// The upstream answered the stream in this slot.
    Answer { slot: u32, serial: u32 },
    /// The client gave up on the stream in this slot.
    Deadline { slot: u32, serial: u32 },
    /// The host timer of an injected delay (native build).
    DelayOver { slot: u32, serial: u32 },
    Tick { generation: u32, envoy: u16, worker: u16 },
    /// The sidecar answers a snapshot poll.
    PollAnswer { generation: u32, envoy: u16, worker: u16, token: u32 },
    Change { index: u32 },
    /// A point of the time series is over.
    Sample,
}

/// One configuration, running on every worker of every Envoy.
pub(crate) struct Generation {
    pub(crate) config: Rc<Config>,
    /// `workers[envoy][worker]`.
    workers: Vec<Vec<Rc<Worker<SimHost>>>>,
    clusters: Vec<ClusterEntry>,
}

/// A request in flight.
struct Flight {
    stream: Stream<SimHost>,
    generation: u32,
    envoy: u16,
    /// Distinguishes this flight from the slot's earlier ones (stale events are dropped).
    serial: u32,
    routed: Option<(u8, u8)>,
    arrived_ns: u64,
    deadline_ns: u64,
    /// The upstream's answer, once dispatched: `Some(status)`, or `None` for a hang.
    answer: Option<u32>,
    /// Was held by an injected delay (its deadline event is queued).
    stream_paused: bool,
}

pub(crate) struct Engine<'s> {
    scenario: &'s Scenario,
    world: Rc<World>,
    rng: Rng,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    /// When the next request arrives (`u64::MAX`: no more).
    next_arrival: u64,
    /// Requests of the replayed log taken so far.
    replayed: usize,
    pub(crate) generations: Vec<Generation>,
    /// The configuration's JSON, as weight changes edit it.
    config_json: serde_json::Value,
    shared: Vec<Rc<RefCell<HashMap<String, Shared>>>>,
    snapshot: Option<Rc<Vec<u8>>>,
    flights: Vec<Option<Flight>>,
    free: Vec<u32>,
    serial: u32,
    timelines: Vec<Vec<Timeline>>,
    traffic: Traffic,
    pub(crate) recorder: Recorder,
    end_ns: u64,
}

/// The request headers the filter reads, as `(name, value)` pairs (absent ones `None`).
type Headers<'a> = [Option<(&'a [u8], &'a [u8])>; 7];

/// A `grpc-timeout` value and the client's deadline it stands for.
struct Timeout {
    header: Vec<u8>,
    ns: u64,
}

/// What each request sends, drawn from the scenario's shares.
struct Traffic {
    path: Vec<u8>,
    users: u32,
    group_header: Vec<u8>,
    user_header: Vec<u8>,
    revision_header: Vec<u8>,
    budget_header: Vec<u8>,
    priority_header: Vec<u8>,
    /// Cumulative percentages with their header values.
    groups: Vec<(f64, Vec<u8>)>,
    revisions: Vec<(f64, Vec<u8>)>,
    timeouts: Vec<(f64, Timeout)>,
    low_pct: f64,
    client_timeout_ns: u64,
}

fn cumulative<T>(items: impl Iterator<Item = (f64, T)>) -> Vec<(f64, T)> {
    let mut acc = 0.0;
    items
        .map(|(pct, v)| {
            acc += pct;
            (acc, v)
        })
        .collect()
}

fn pick<T>(table: &[(f64, T)], roll: f64) -> Option<&T> {
    table.iter().find(|(upto, _)| roll < *upto).map(|(_, v)| v)
}

impl<'s> Engine<'s> {
    pub(crate) fn new(scenario: &'s Scenario, config_json: &str, snapshot: Option<&serde_json::Value>) -> Result<Self, RehearsalError> {
        let config_value: serde_json::Value =
            serde_json::from_str(config_json).map_err(|e| RehearsalError::config(format!("line {}:{}", e.line(), e.column()), e.to_string()))?;
        let config = parse_config(&config_value)?;
        let t = &scenario.traffic;
        let h = &config.headers;
        let traffic = Traffic {
            path: t.method.as_bytes().to_vec(),
            users: t.users,
            group_header: h.group.as_bytes().to_vec(),
            user_header: h.user_key.as_bytes().to_vec(),
            revision_header: h.revision.as_bytes().to_vec(),
            budget_header: h.budget.as_bytes().to_vec(),
            priority_header: h.priority.as_bytes().to_vec(),
            groups: cumulative(t.groups.iter().map(|g| (g.pct, g.value.clone().into_bytes()))),
            revisions: cumulative(t.revisions.iter().map(|g| (g.pct, g.value.clone().into_bytes()))),
            timeouts: cumulative(
                t.timeouts_ms.iter().map(|g| (g.pct, Timeout { header: format!("{}m", g.value).into_bytes(), ns: u64::from(g.value) * MS })),
            ),
            low_pct: t.low_priority_pct,
            client_timeout_ns: u64::from(t.client_timeout_ms) * MS,
        };
        let timelines = config.routes.iter().map(|r| r.targets.iter().map(|tg| Timeline::new(scenario.targets.get(&tg.name))).collect()).collect();
        let world = Rc::new(World::default());
        let shared = (0..scenario.fleet.envoys).map(|_| Rc::new(RefCell::new(HashMap::new()))).collect();
        let recorder = Recorder::new(scenario, &config);
        let mut engine = Engine {
            scenario,
            world,
            rng: Rng::new(scenario.seed),
            queue: BinaryHeap::new(),
            seq: 0,
            next_arrival: scenario.replay_log.as_ref().map_or(0, |l| l.requests.first().map_or(u64::MAX, |r| r.at_ns)),
            replayed: 0,
            generations: Vec::new(),
            config_json: config_value,
            shared,
            snapshot: snapshot.map(|s| Rc::new(s.to_string().into_bytes())),
            flights: Vec::new(),
            free: Vec::new(),
            serial: 0,
            timelines,
            traffic,
            recorder,
            end_ns: (scenario.duration_s * S) as u64,
        };
        engine.install(config)?;
        for (i, c) in scenario.changes.iter().enumerate() {
            engine.at((c.at_s * S) as u64, Event::Change { index: i as u32 });
        }
        engine.at(u64::from(scenario.sample_ms) * MS, Event::Sample);
        Ok(engine)
    }

    fn at(&mut self, time: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((time, self.seq, event)));
    }

    /// Starts a configuration on every worker of every Envoy.
    fn install(&mut self, mut config: Config) -> Result<(), RehearsalError> {
        // The decision's reason reaches the report through filter state.
        config.decision_to_filter_state = true;
        let config = Rc::new(config);
        let generation = self.generations.len() as u32;
        let fleet = &self.scenario.fleet;
        let mut workers = Vec::new();
        for e in 0..fleet.envoys as u16 {
            let board = Board::new(&config);
            let mut per_envoy = Vec::new();
            for w in 0..fleet.workers as u16 {
                let host = SimHost::new(&self.world, &self.shared[usize::from(e)], e, w);
                let sharing = match fleet.build {
                    Build::Wasm => Sharing::HostData,
                    Build::Native => Sharing::Board { board: board.clone(), ticks: w == 0 },
                };
                let seed = self.scenario.seed ^ (u64::from(e) << 32) ^ u64::from(w) ^ (u64::from(generation) << 48);
                let worker = Worker::new(host, (*config).clone(), seed, sharing).map_err(|e| RehearsalError::config("", e.to_string()))?;
                per_envoy.push(Rc::new(worker));
            }
            workers.push(per_envoy);
        }
        let clusters = config
            .routes
            .iter()
            .enumerate()
            .flat_map(|(ri, r)| {
                r.targets.iter().enumerate().map(move |(ti, t)| ClusterEntry { cluster: t.cluster.clone(), route: ri as u8, target: ti as u8 })
            })
            .collect();
        let now = self.world.now_ns.get();
        let tick = u64::from(config.tick_ms.max(1)) * MS;
        for e in 0..fleet.envoys as u16 {
            for w in 0..fleet.workers as u16 {
                // Workers start their ticks at different moments, as Envoy's do.
                let offset = self.rng.next_u64() % tick;
                self.at(now + offset, Event::Tick { generation, envoy: e, worker: w });
            }
        }
        self.recorder.add_generation(&config);
        self.generations.push(Generation { config, workers, clusters });
        Ok(())
    }

    pub(crate) fn into_report(self) -> crate::Report {
        self.recorder.report()
    }

    /// Runs to the end of the scenario.
    pub(crate) fn run(&mut self) -> Result<(), RehearsalError> {
        loop {
            // Arrivals come one at a time, in order: kept beside the queue, not in it.
            let next = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let (time, event) = if self.next_arrival != u64::MAX && next.is_none_or(|t| self.next_arrival < t) {
                (std::mem::replace(&mut self.next_arrival, u64::MAX), Event::Arrival)
            } else if let Some(Reverse((t, _, e))) = self.queue.pop() {
                (t, e)
            } else {
                break;
            };
            if time > self.end_ns {
                break;
            }
            self.world.now_ns.set(time);
            match event {
                Event::Arrival => self.arrival(time),
                Event::Answer { slot, serial } => self.answer(slot, serial),
                Event::Deadline { slot, serial } => self.deadline(slot, serial),
                Event::DelayOver { slot, serial } => self.delay_over(slot, serial),
                Event::Tick { generation, envoy, worker } => self.tick(generation, envoy, worker),
                Event::PollAnswer { generation, envoy, worker, token } => self.poll_answer(generation, envoy, worker, token),
                Event::Change { index } => self.change(index as usize)?,
                Event::Sample => {
                    self.recorder.close_point();
                    self.at(time + u64::from(self.scenario.sample_ms) * MS, Event::Sample);
                }
            }
            self.drain_inbox();
        }
        self.world.now_ns.set(self.end_ns);
        self.recorder.finish(self.end_ns);
        Ok(())
    }

    fn rate_at(&self, t: u64) -> (f64, Option<u64>) {
        let points = &self.scenario.traffic.rate;
        let mut rate = 0.0;
        let mut next = None;
        for p in points {
            let at = (p.at_s * S) as u64;
            if at <= t {
                rate = p.rps;
            } else {
                next = Some(at);
                break;
            }
        }
        (rate, next)
    }

    fn schedule_arrival(&mut self, now: u64) {
        let (rate, next_step) = self.rate_at(now);
        if rate <= 0.0 {
            if let Some(step) = next_step {
                self.next_arrival = step;
            }
            return;
        }
        let gap = self.rng.exp(S / rate) as u64;
        match next_step {
            // Arrivals are memoryless: past a rate step, draw again from the step.
            Some(step) if now + gap >= step => self.next_arrival = step,
            _ => self.next_arrival = now + gap.max(1),
        }
    }

    fn arrival(&mut self, now: u64) {
        // From the log, or drawn from the scenario's shares.
        let logged = match self.scenario.replay_log.as_ref() {
            Some(log) => {
                let entry = log.requests.get(self.replayed);
                self.replayed += 1;
                self.next_arrival = log.requests.get(self.replayed).map_or(u64::MAX, |r| r.at_ns);
                match entry {
                    Some(e) => Some(e),
                    None => return,
                }
            }
            None => None,
        };
        if logged.is_none() {
            let (rate, _) = self.rate_at(now);
            self.schedule_arrival(now);
            if rate <= 0.0 {
                return;
            }
        }
        let fleet = &self.scenario.fleet;
        let envoy = self.rng.below(fleet.envoys) as u16;
        let worker = self.rng.below(fleet.workers) as u16;
        let generation = (self.generations.len() - 1) as u32;
        let tr = &self.traffic;
        let key: UserKey;
        let (headers, deadline_ns): (Headers<'_>, u64) = match logged {
            Some(e) => {
                let wait = e.timeout.as_deref().and_then(timeout_ns).unwrap_or(tr.client_timeout_ns);
                (
                    [
                        Some((b":path".as_slice(), e.path.as_bytes())),
                        Some((b"content-type".as_slice(), b"application/grpc".as_slice())),
                        e.user.as_deref().map(|v| (tr.user_header.as_slice(), v.as_bytes())),
                        e.group.as_deref().map(|v| (tr.group_header.as_slice(), v.as_bytes())),
                        e.revision.as_deref().map(|v| (tr.revision_header.as_slice(), v.as_bytes())),
                        e.timeout.as_deref().map(|v| (tr.budget_header.as_slice(), v.as_bytes())),
                        e.priority.as_deref().map(|v| (tr.priority_header.as_slice(), v.as_bytes())),
                    ],
                    now + wait,
                )
            }
            None => {
                key = UserKey::new(self.rng.below(tr.users));
                let group = pick(&tr.groups, self.rng.unit() * 100.0);
                let revision = pick(&tr.revisions, self.rng.unit() * 100.0);
                let timeout = pick(&tr.timeouts, self.rng.unit() * 100.0);
                let low = self.rng.unit() * 100.0 < tr.low_pct;
                (
                    [
                        Some((b":path".as_slice(), tr.path.as_slice())),
                        Some((b"content-type".as_slice(), b"application/grpc".as_slice())),
                        Some((tr.user_header.as_slice(), key.as_bytes())),
                        group.map(|g| (tr.group_header.as_slice(), g.as_slice())),
                        revision.map(|r| (tr.revision_header.as_slice(), r.as_slice())),
                        timeout.map(|t| (tr.budget_header.as_slice(), t.header.as_slice())),
                        low.then_some((tr.priority_header.as_slice(), b"low".as_slice())),
                    ],
                    now + timeout.map_or(tr.client_timeout_ns, |t| t.ns),
                )
            }
        };

        let Some(gen) = self.generations.last() else { return };
        let Some(w) = gen.workers.get(usize::from(envoy)).and_then(|e| e.get(usize::from(worker))) else { return };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.flights.push(None);
                (self.flights.len() - 1) as u32
            }
        };
        let mut stream = Stream::new(w.clone(), u64::from(slot));
        let mut s = SimStream::new(&gen.clusters, &gen.config.headers.cluster, self.scenario.fleet.build == Build::Native);
        let flow = stream.on_request_headers(&mut s, headers.into_iter().flatten(), false);
        self.recorder.arrival(now, generation as usize, envoy, s.routed, s.reason);
        if let Some((kind, code)) = s.reply {
            // Answered locally: the client has its status now.
            stream.on_complete();
            self.recorder.local_reply(kind, code);
            self.free.push(slot);
            return;
        }
        self.serial = self.serial.wrapping_add(1);
        let serial = self.serial;
        let timer = s.timer_ms;
        let routed = s.routed;
        let flight = Flight { stream, generation, envoy, serial, routed, arrived_ns: now, deadline_ns, answer: None, stream_paused: flow == Flow::Pause };
        if let Some(f) = self.flights.get_mut(slot as usize) {
            *f = Some(flight);
        }
        match (flow, timer) {
            (Flow::Continue, _) => self.dispatch(slot, now),
            (Flow::Pause, timer) => {
                // Held by an injected delay; the client may give up while it waits.
                self.at(deadline_ns, Event::Deadline { slot, serial });
                if let Some(ms) = timer {
                    self.at(now + u64::from(ms) * MS, Event::DelayOver { slot, serial });
                }
                // Otherwise the worker's tick ends the delay (Wasm build): see `drain_inbox`.
            }
        }
    }

    /// The request reaches its upstream: draws the answer and its time.
    fn dispatch(&mut self, slot: u32, now: u64) {
        let Some(Some(f)) = self.flights.get_mut(slot as usize) else { return };
        let Some((route, target)) = f.routed else {
            // Unrouted (passed through): nothing Switchyard decides; treat as answered OK.
            f.answer = Some(0);
            let serial = f.serial;
            self.at(now + MS, Event::Answer { slot, serial });
            return;
        };
        let Some(phase) = self.timelines.get(usize::from(route)).and_then(|r| r.get(usize::from(target))).map(|t| *t.at(now)) else {
            return;
        };
        // One event per request: the answer, or the client giving up first. (The queue's
        // size is what a rehearsal's speed depends on.)
        let answer_at = if phase.hang { u64::MAX } else { now + phase.latency_ns(&mut self.rng) };
        let status = if self.rng.unit() * 100.0 < phase.error_pct { phase.error_code } else { 0 };
        let Some(Some(f)) = self.flights.get_mut(slot as usize) else { return };
        f.answer = Some(status);
        let (serial, deadline) = (f.serial, f.deadline_ns);
        if answer_at < deadline {
            self.at(answer_at, Event::Answer { slot, serial });
        } else if f.stream_paused {
            // Its deadline event is already queued.
        } else {
            self.at(deadline, Event::Deadline { slot, serial });
        }
    }

    fn take(&mut self, slot: u32, serial: u32) -> Option<Flight> {
        let f = self.flights.get_mut(slot as usize)?;
        if f.as_ref().is_none_or(|f| f.serial != serial) {
            return None;
        }
        let flight = f.take();
        self.free.push(slot);
        flight
    }

    fn answer(&mut self, slot: u32, serial: u32) {
        let Some(mut f) = self.take(slot, serial) else { return };
        let Some(gen) = self.generations.get(f.generation as usize) else { return };
        let status = f.answer.unwrap_or(0);
        let mut s = SimStream::new(&gen.clusters, &gen.config.headers.cluster, false);
        s.status = Some(status);
        let now = self.world.now_ns.get();
        if status == 0 {
            f.stream.on_response_headers(&mut s, false);
            f.stream.on_response_trailers(&mut s);
        } else {
            // gRPC servers answer errors trailers-only.
            f.stream.on_response_headers(&mut s, true);
        }
        f.stream.on_complete();
        self.recorder.answered(f.generation as usize, f.routed, status, now.saturating_sub(f.arrived_ns));
    }

    fn deadline(&mut self, slot: u32, serial: u32) {
        let Some(mut f) = self.take(slot, serial) else { return };
        // The client cancels: the stream ends without a response.
        f.stream.on_complete();
        self.recorder.timed_out(f.generation as usize, f.routed);
    }

    fn delay_over(&mut self, slot: u32, serial: u32) {
        let now = self.world.now_ns.get();
        let resumed = {
            let Some(Some(f)) = self.flights.get_mut(slot as usize) else { return };
            if f.serial != serial {
                return;
            }
            let Some(gen) = self.generations.get(f.generation as usize) else { return };
            let mut s = SimStream::new(&gen.clusters, &gen.config.headers.cluster, true);
            f.stream.on_delay_over(&mut s);
            s.resumed
        };
        if resumed {
            self.dispatch(slot, now);
        }
    }

    fn tick(&mut self, generation: u32, envoy: u16, worker: u16) {
        let Some(gen) = self.generations.get(generation as usize) else { return };
        let current = generation as usize + 1 == self.generations.len();
        let Some(w) = gen.workers.get(usize::from(envoy)).and_then(|e| e.get(usize::from(worker))) else { return };
        w.tick();
        // A replaced configuration's workers stop ticking once nothing of theirs waits.
        if current || self.flights.iter().flatten().any(|f| f.generation == generation) {
            let period = u64::from(w.host().tick_ms.get().max(1)) * MS;
            let now = self.world.now_ns.get();
            self.at(now + period, Event::Tick { generation, envoy, worker });
        }
    }

    fn poll_answer(&mut self, generation: u32, envoy: u16, worker: u16, token: u32) {
        let Some(w) = self.generations.get(generation as usize).and_then(|g| g.workers.get(usize::from(envoy))).and_then(|e| e.get(usize::from(worker)))
        else {
            return;
        };
        let body = self.snapshot.clone();
        let reply = match &body {
            Some(b) => CalloutReply { status: Some(200), body: b },
            // No snapshot in the scenario: the sidecar does not answer.
            None => CalloutReply { status: None, body: &[] },
        };
        w.on_callout_reply(token, &reply);
    }

    fn change(&mut self, index: usize) -> Result<(), RehearsalError> {
        let Some(c) = self.scenario.changes.get(index) else { return Ok(()) };
        let place = format!("changes[{index}]");
        if let Some(s) = &c.snapshot {
            self.snapshot = Some(Rc::new(s.to_string().into_bytes()));
        }
        let mut new_json = None;
        if let Some(config) = &c.config {
            new_json = Some(config.clone());
        }
        if !c.weights.is_empty() {
            let mut json = self.config_json.clone();
            set_weights(&mut json, c.route.as_deref(), &c.weights).map_err(|m| RehearsalError::scenario(&place, m))?;
            new_json = Some(json);
        }
        if let Some(json) = new_json {
            let config = parse_config(&json).map_err(|e| RehearsalError::scenario(&format!("{place}.config"), e.to_string()))?;
            let before = self.generations.last().map(|g| g.config.clone());
            if let Some(before) = before {
                self.recorder.weights_changed(self.world.now_ns.get(), &before, &config, self.traffic.users);
            }
            self.config_json = json;
            self.install(config)?;
        }
        Ok(())
    }

    /// Acts on what the core asked of its hosts during the last event.
    fn drain_inbox(&mut self) {
        if self.world.inbox.borrow().is_empty() {
            return;
        }
        let mut inbox = std::mem::take(&mut *self.world.inbox.borrow_mut());
        let now = self.world.now_ns.get();
        for change in inbox.health.drain(..) {
            self.recorder.health(change);
        }
        for (envoy, stream) in inbox.resumed.drain(..) {
            let slot = stream as u32;
            if self.flights.get(slot as usize).and_then(|f| f.as_ref()).is_some_and(|f| f.envoy == envoy) {
                self.dispatch(slot, now);
            }
        }
        let generation = (self.generations.len() - 1) as u32;
        for (envoy, worker, token) in inbox.callouts.drain(..) {
            self.at(now + MS, Event::PollAnswer { generation, envoy, worker, token });
        }
        for (at, envoy, line) in inbox.logs.drain(..) {
            self.recorder.log(at, envoy, line);
        }
        // Give the (now empty) vectors back, keeping their capacity.
        *self.world.inbox.borrow_mut() = inbox;
    }
}

/// A `grpc-timeout` value (`250m`, `2S`) in ns: the replayed client's deadline.
fn timeout_ns(v: &str) -> Option<u64> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let ns = match unit {
        "H" => 3_600_000_000_000,
        "M" => 60_000_000_000,
        "S" => 1_000_000_000,
        "m" => 1_000_000,
        "u" => 1_000,
        "n" => 1,
        _ => return None,
    };
    n.checked_mul(ns)
}

fn parse_config(json: &serde_json::Value) -> Result<Config, RehearsalError> {
    let bytes = json.to_string();
    Config::from_json(bytes.as_bytes()).map_err(|e| RehearsalError::config(e.path.clone(), e.message.clone()))
}

/// Sets target weights in a plugin configuration's JSON.
pub(crate) fn set_weights(json: &mut serde_json::Value, route: Option<&str>, weights: &std::collections::BTreeMap<String, u32>) -> Result<(), String> {
    let routes = json.get_mut("routes").and_then(|r| r.as_array_mut()).ok_or("the configuration has no `routes`")?;
    let r = match route {
        Some(name) => routes.iter_mut().find(|r| r.get("name").and_then(|n| n.as_str()) == Some(name)).ok_or(format!("no route named {name:?}"))?,
        None => routes.first_mut().ok_or("the configuration has no routes")?,
    };
    let targets = r.get_mut("targets").and_then(|t| t.as_array_mut()).ok_or("the route has no `targets`")?;
    for (name, weight) in weights {
        let t = targets
            .iter_mut()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
            .ok_or(format!("weights: the route has no target named {name:?}"))?;
        if let Some(obj) = t.as_object_mut() {
            obj.insert("weight".into(), (*weight).into());
        }
    }
    Ok(())
}
