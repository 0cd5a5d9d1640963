//! Seeded random schemas and mutations for the differential test.
//!
//! A [`Model`] is a small proto file (messages with scalar, enum, message and map fields,
//! oneofs, reserved ranges and names, enums with aliases, a service). [`Model::mutate`]
//! applies one random edit of the kinds schema authors make — add/remove/renumber/retype/
//! rename fields, move them in and out of oneofs, change labels and defaults, edit enums and
//! reserved ranges, change RPC types and streaming, switch package or syntax. Everything is
//! driven by a seed so any failing pair can be regenerated.

use std::fmt::Write;

/// SplitMix64: tiny, seedable, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const SCALARS: &[&str] = &[
    "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64",
    "bool", "string", "bytes", "double", "float",
];
const MAP_KEYS: &[&str] = &["int32", "int64", "uint32", "string", "bool", "sint64"];

#[derive(Clone, Debug, PartialEq)]
pub enum Ty {
    Scalar(&'static str),
    Message(usize),
    Enum(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Label {
    /// proto3 implicit presence (rendered as `optional` in proto2).
    Implicit,
    Optional,
    Repeated,
    Required,
}

#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub number: u32,
    pub ty: Ty,
    pub label: Label,
    pub oneof: Option<String>,
    pub json_name: Option<String>,
    pub default: Option<String>,
    pub map_key: Option<&'static str>,
}

#[derive(Clone, Debug, Default)]
pub struct Message {
    pub fields: Vec<Field>,
    pub reserved: Vec<(u32, u32)>,
    pub reserved_names: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Enum {
    pub values: Vec<(String, i32)>,
    pub reserved: Vec<(i32, i32)>,
    pub reserved_names: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Method {
    pub name: String,
    pub request: usize,
    pub response: usize,
    pub client_streaming: bool,
    pub server_streaming: bool,
    pub idempotency: Option<&'static str>,
}

#[derive(Clone, Debug)]
pub struct Model {
    pub proto2: bool,
    pub package: String,
    pub messages: Vec<Message>,
    pub enums: Vec<Enum>,
    pub methods: Vec<Method>,
    counter: u32,
}

impl Model {
    /// A random starting schema.
    pub fn generate(rng: &mut Rng) -> Model {
        let mut m = Model {
            proto2: rng.chance(35),
            package: "fuzz.v1".into(),
            messages: vec![Message::default(); 2 + rng.below(3)],
            enums: vec![Enum::default(); 1 + rng.below(2)],
            methods: Vec::new(),
            counter: 0,
        };
        for e in 0..m.enums.len() {
            m.enums[e].values.push((format!("E{e}_UNSPECIFIED"), 0));
            for v in 1..=(1 + rng.below(3)) as i32 {
                let name = m.fresh(&format!("E{e}_V"));
                m.enums[e].values.push((name, v));
            }
            if rng.chance(40) {
                let n = 40 + rng.below(5) as i32;
                m.enums[e].reserved.push((n, n + rng.below(3) as i32));
            }
            if rng.chance(30) {
                let name = m.fresh("GONE");
                m.enums[e].reserved_names.push(name);
            }
        }
        for i in 0..m.messages.len() {
            for _ in 0..(2 + rng.below(4)) {
                m.add_field(rng, i);
            }
            if rng.chance(30) {
                let n = 40 + rng.below(10) as u32;
                m.messages[i].reserved.push((n, n + rng.below(3) as u32));
            }
            if rng.chance(30) {
                let name = m.fresh("gone");
                m.messages[i].reserved_names.push(name);
            }
        }
        for k in 0..(1 + rng.below(2)) {
            let n = m.messages.len();
            m.methods.push(Method {
                name: format!("Call{k}"),
                request: rng.below(n),
                response: rng.below(n),
                client_streaming: rng.chance(20),
                server_streaming: rng.chance(20),
                idempotency: None,
            });
        }
        m
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    fn used_numbers(&self, msg: usize) -> Vec<u32> {
        let m = &self.messages[msg];
        m.fields.iter().map(|f| f.number).collect()
    }

    fn free_number(&self, rng: &mut Rng, msg: usize) -> u32 {
        let used = self.used_numbers(msg);
        let m = &self.messages[msg];
        loop {
            let n = 1 + rng.below(30) as u32;
            if !used.contains(&n) && !m.reserved.iter().any(|&(s, e)| s <= n && n <= e) {
                return n;
            }
        }
    }

    fn random_type(&self, rng: &mut Rng) -> Ty {
        match rng.below(10) {
            0 | 1 => Ty::Enum(rng.below(self.enums.len())),
            2 => Ty::Message(rng.below(self.messages.len())),
            _ => Ty::Scalar(rng.pick(SCALARS)),
        }
    }

    fn add_field(&mut self, rng: &mut Rng, msg: usize) {
        let number = self.free_number(rng, msg);
        let name = self.fresh("f");
        let ty = self.random_type(rng);
        let label = match rng.below(6) {
            0 => Label::Repeated,
            1 => Label::Optional,
            2 if self.proto2 => Label::Required,
            _ => Label::Implicit,
        };
        let map_key = (rng.chance(10) && label != Label::Required).then(|| rng.pick(MAP_KEYS));
        let mut field = Field {
            name,
            number,
            ty,
            label,
            oneof: None,
            json_name: None,
            default: None,
            map_key,
        };
        if map_key.is_none() && label == Label::Implicit && rng.chance(20) {
            field.oneof = Some(format!("choice{}", rng.below(2)));
        }
        self.messages[msg].fields.push(field);
    }

    /// Applies one random mutation. Returns its description.
    pub fn mutate(&mut self, rng: &mut Rng) -> String {
        for _ in 0..50 {
            if let Some(what) = self.try_mutate(rng) {
                return what;
            }
        }
        self.add_field(rng, 0);
        "add field".into()
    }

    fn try_mutate(&mut self, rng: &mut Rng) -> Option<String> {
        let msg = rng.below(self.messages.len());
        let nfields = self.messages[msg].fields.len();
        let fi = rng.below(nfields);
        let e = rng.below(self.enums.len());
        Some(match rng.below(26) {
            0 => {
                self.add_field(rng, msg);
                format!("M{msg}: add field")
            }
            1..=3 if nfields > 0 => {
                let f = self.messages[msg].fields.remove(fi);
                let how = rng.below(4);
                if how & 1 == 1 {
                    self.messages[msg].reserved.push((f.number, f.number));
                }
                if how & 2 == 2 {
                    self.messages[msg].reserved_names.push(f.name.clone());
                }
                format!("M{msg}: remove {} (reserve mode {how})", f.name)
            }
            4 if nfields > 0 => {
                let n = self.free_number(rng, msg);
                let f = &mut self.messages[msg].fields[fi];
                f.number = n;
                format!("M{msg}: renumber {} to {n}", f.name)
            }
            5..=7 if nfields > 0 => {
                let ty = self.random_type(rng);
                let f = &mut self.messages[msg].fields[fi];
                f.ty = ty;
                f.default = None;
                format!("M{msg}: retype {} to {:?}", f.name, f.ty)
            }
            8 if nfields > 0 => {
                let proto2 = self.proto2;
                let f = &mut self.messages[msg].fields[fi];
                if f.oneof.is_some() || f.map_key.is_some() {
                    return None;
                }
                f.label = match rng.below(4) {
                    0 => Label::Repeated,
                    1 => Label::Optional,
                    2 if proto2 => Label::Required,
                    _ => Label::Implicit,
                };
                if f.label == Label::Repeated {
                    f.default = None;
                }
                format!("M{msg}: relabel {} {:?}", f.name, f.label)
            }
            9 if nfields > 0 => {
                let name = self.fresh("r");
                let f = &mut self.messages[msg].fields[fi];
                let old = std::mem::replace(&mut f.name, name);
                format!("M{msg}: rename {old} to {}", f.name)
            }
            10 if nfields > 0 => {
                let json = self.fresh("j");
                let f = &mut self.messages[msg].fields[fi];
                f.json_name = if f.json_name.is_some() { None } else { Some(json) };
                format!("M{msg}: json_name of {} = {:?}", f.name, f.json_name)
            }
            11 if nfields > 0 => {
                let f = &mut self.messages[msg].fields[fi];
                if f.map_key.is_some() {
                    return None;
                }
                if f.oneof.is_some() {
                    f.oneof = None;
                } else {
                    f.oneof = Some(format!("choice{}", rng.below(2)));
                    f.label = Label::Implicit;
                    f.default = None;
                }
                format!("M{msg}: oneof of {} = {:?}", f.name, f.oneof)
            }
            12 if nfields > 0 => {
                let f = &mut self.messages[msg].fields[fi];
                if f.oneof.is_some() {
                    return None;
                }
                f.map_key = if f.map_key.is_some() { None } else { Some(rng.pick(MAP_KEYS)) };
                if f.map_key.is_none() {
                    f.label = Label::Repeated;
                }
                f.default = None;
                format!("M{msg}: map key of {} = {:?}", f.name, f.map_key)
            }
            13 if nfields > 0 && self.proto2 => {
                let value = {
                    let f = &self.messages[msg].fields[fi];
                    if f.map_key.is_some() || matches!(f.label, Label::Repeated) || f.oneof.is_some() {
                        return None;
                    }
                    match &f.ty {
                        Ty::Scalar("bool") => Some(["true", "false"][rng.below(2)].to_string()),
                        Ty::Scalar("string") | Ty::Scalar("bytes") => Some(format!("\"d{}\"", rng.below(3))),
                        Ty::Scalar("double") | Ty::Scalar("float") => Some(format!("{}.5", rng.below(3))),
                        Ty::Scalar(_) => Some(format!("{}", rng.below(3))),
                        Ty::Enum(i) => {
                            let values = &self.enums[*i].values;
                            Some(values[rng.below(values.len())].0.clone())
                        }
                        Ty::Message(_) => return None,
                    }
                };
                let f = &mut self.messages[msg].fields[fi];
                f.default = if rng.chance(30) { None } else { value };
                format!("M{msg}: default of {} = {:?}", f.name, f.default)
            }
            14 => {
                let n = self.enums[e].values.iter().map(|v| v.1).max().unwrap_or(0) + 1;
                if self.enums[e].reserved.iter().any(|&(s, end)| s <= n && n <= end) {
                    return None;
                }
                let name = self.fresh(&format!("E{e}_V"));
                self.enums[e].values.push((name, n));
                format!("E{e}: add value {n}")
            }
            15 | 16 => {
                let values = &self.enums[e].values;
                if values.len() < 2 {
                    return None;
                }
                let i = 1 + rng.below(values.len() - 1);
                let (name, number) = self.enums[e].values.remove(i);
                if self.enums[e].values.iter().any(|v| v.1 == number) {
                    // An alias remains for that number.
                    return Some(format!("E{e}: remove alias {name}"));
                }
                let how = rng.below(4);
                if how & 1 == 1 {
                    self.enums[e].reserved.push((number, number));
                }
                if how & 2 == 2 {
                    self.enums[e].reserved_names.push(name.clone());
                }
                format!("E{e}: remove value {name} (reserve mode {how})")
            }
            17 => {
                let i = rng.below(self.enums[e].values.len());
                let name = self.fresh(&format!("E{e}_R"));
                self.enums[e].values[i].0 = name;
                format!("E{e}: rename value {i}")
            }
            18 => {
                let i = rng.below(self.enums[e].values.len());
                let number = self.enums[e].values[i].1;
                let name = self.fresh(&format!("E{e}_A"));
                self.enums[e].values.push((name, number));
                format!("E{e}: alias for {number}")
            }
            19 => {
                // Reserved ranges and names: drop one when there is one (half the time),
                // otherwise add a range.
                let drop_range = rng.chance(50);
                if rng.chance(50) {
                    let m = &mut self.messages[msg];
                    if drop_range && !m.reserved.is_empty() {
                        let i = rng.below(m.reserved.len());
                        m.reserved.remove(i);
                    } else if !m.reserved_names.is_empty() && rng.chance(50) {
                        let i = rng.below(m.reserved_names.len());
                        m.reserved_names.remove(i);
                    } else {
                        let n = 50 + rng.below(20) as u32;
                        m.reserved.push((n, n + rng.below(2) as u32));
                    }
                    format!("M{msg}: reserved edit")
                } else {
                    let en = &mut self.enums[e];
                    if drop_range && !en.reserved.is_empty() {
                        let i = rng.below(en.reserved.len());
                        en.reserved.remove(i);
                    } else if !en.reserved_names.is_empty() && rng.chance(50) {
                        let i = rng.below(en.reserved_names.len());
                        en.reserved_names.remove(i);
                    } else {
                        let n = 50 + rng.below(20) as i32;
                        en.reserved.push((n, n + rng.below(2) as i32));
                    }
                    format!("E{e}: reserved edit")
                }
            }
            20 | 21 => {
                let n = self.messages.len();
                let k = rng.below(self.methods.len());
                let meth = &mut self.methods[k];
                match rng.below(5) {
                    0 => meth.request = rng.below(n),
                    1 => meth.response = rng.below(n),
                    2 => meth.client_streaming = !meth.client_streaming,
                    3 => meth.server_streaming = !meth.server_streaming,
                    _ => {
                        meth.idempotency =
                            rng.pick(&[None, Some("IDEMPOTENCY_UNKNOWN"), Some("NO_SIDE_EFFECTS"), Some("IDEMPOTENT")])
                    }
                }
                format!("rpc {}: edit", meth.name)
            }
            22 => {
                let name = format!("Call{}", self.methods.len() + 10);
                let n = self.messages.len();
                self.methods.push(Method {
                    name,
                    request: rng.below(n),
                    response: rng.below(n),
                    client_streaming: rng.chance(30),
                    server_streaming: rng.chance(30),
                    idempotency: None,
                });
                "add rpc".into()
            }
            23 if rng.chance(20) => {
                self.package = if self.package == "fuzz.v1" { "fuzz.v2".into() } else { "fuzz.v1".into() };
                "change package".into()
            }
            24 => {
                if self.proto2 {
                    // proto3 has no required fields, defaults or closed-enum quirks.
                    for m in &mut self.messages {
                        for f in &mut m.fields {
                            f.default = None;
                            if f.label == Label::Required {
                                f.label = Label::Optional;
                            }
                        }
                    }
                }
                self.proto2 = !self.proto2;
                "switch syntax".into()
            }
            25 if nfields > 0 && self.proto2 => {
                let f = &mut self.messages[msg].fields[fi];
                if f.oneof.is_some() || f.map_key.is_some() {
                    return None;
                }
                f.label = if f.label == Label::Required { Label::Optional } else { Label::Required };
                format!("M{msg}: required toggle {}", f.name)
            }
            _ => return None,
        })
    }

    fn type_name(&self, ty: &Ty) -> String {
        match ty {
            Ty::Scalar(s) => (*s).to_string(),
            Ty::Message(i) => format!("M{i}"),
            Ty::Enum(i) => format!("E{i}"),
        }
    }

    /// The `.proto` text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let syntax = if self.proto2 { "proto2" } else { "proto3" };
        writeln!(out, "syntax = \"{syntax}\";\npackage {};\n", self.package).unwrap();
        for (i, e) in self.enums.iter().enumerate() {
            writeln!(out, "enum E{i} {{").unwrap();
            let numbers: Vec<i32> = e.values.iter().map(|v| v.1).collect();
            if numbers.iter().enumerate().any(|(k, n)| numbers[..k].contains(n)) {
                writeln!(out, "  option allow_alias = true;").unwrap();
            }
            for (lo, hi) in &e.reserved {
                writeln!(out, "  reserved {lo} to {hi};").unwrap();
            }
            for name in &e.reserved_names {
                writeln!(out, "  reserved \"{name}\";").unwrap();
            }
            for (name, number) in &e.values {
                writeln!(out, "  {name} = {number};").unwrap();
            }
            writeln!(out, "}}\n").unwrap();
        }
        for (i, m) in self.messages.iter().enumerate() {
            writeln!(out, "message M{i} {{").unwrap();
            for (lo, hi) in &m.reserved {
                writeln!(out, "  reserved {lo} to {hi};").unwrap();
            }
            for name in &m.reserved_names {
                writeln!(out, "  reserved \"{name}\";").unwrap();
            }
            let mut oneofs: Vec<&str> = Vec::new();
            for f in &m.fields {
                match &f.oneof {
                    Some(o) => {
                        if !oneofs.contains(&o.as_str()) {
                            oneofs.push(o);
                        }
                    }
                    None => writeln!(out, "  {}", self.render_field(f)).unwrap(),
                }
            }
            for o in oneofs {
                writeln!(out, "  oneof {o} {{").unwrap();
                for f in m.fields.iter().filter(|f| f.oneof.as_deref() == Some(o)) {
                    writeln!(out, "    {}", self.render_field(f)).unwrap();
                }
                writeln!(out, "  }}").unwrap();
            }
            writeln!(out, "}}\n").unwrap();
        }
        writeln!(out, "service S {{").unwrap();
        for meth in &self.methods {
            let stream = |s: bool| if s { "stream " } else { "" };
            write!(
                out,
                "  rpc {}({}M{}) returns ({}M{})",
                meth.name,
                stream(meth.client_streaming),
                meth.request,
                stream(meth.server_streaming),
                meth.response
            )
            .unwrap();
            match meth.idempotency {
                Some(level) => writeln!(out, " {{\n    option idempotency_level = {level};\n  }}").unwrap(),
                None => writeln!(out, ";").unwrap(),
            }
        }
        writeln!(out, "}}").unwrap();
        out
    }

    fn render_field(&self, f: &Field) -> String {
        let ty = self.type_name(&f.ty);
        let mut options = Vec::new();
        if let Some(j) = &f.json_name {
            options.push(format!("json_name = \"{j}\""));
        }
        if let (Some(d), true) = (&f.default, self.proto2) {
            options.push(format!("default = {d}"));
        }
        let options = if options.is_empty() { String::new() } else { format!(" [{}]", options.join(", ")) };
        if let Some(key) = f.map_key {
            return format!("map<{key}, {ty}> {} = {}{options};", f.name, f.number);
        }
        let label = match (f.oneof.is_some(), f.label, self.proto2) {
            (true, _, _) => "",
            (_, Label::Repeated, _) => "repeated ",
            (_, Label::Required, true) => "required ",
            (_, Label::Optional, _) | (_, Label::Implicit, true) | (_, Label::Required, false) => "optional ",
            (_, Label::Implicit, false) => "",
        };
        // Message-typed fields cannot be `required`-free in oneof rules, and proto3 maps of
        // enums need open enums: both hold here since every enum starts at 0.
        format!("{label}{ty} {} = {}{options};", f.name, f.number)
    }
}
