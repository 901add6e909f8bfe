use super::*;
use crate::admission::TrunkSpec;

fn outbound_trunk(id: &str, address: &str, destinations: &[&str], caller_ids: &[&str]) -> Trunk {
    Trunk::from_spec(TrunkSpec {
        id: Some(id.into()),
        name: id.into(),
        allowed_addresses: vec![],
        username: None,
        password: None,
        numbers: vec![],
        outbound: Some(OutboundSpec {
            address: address.into(),
            transport: Default::default(),
            register: false,
            register_expires_s: 3600,
            username: Some("junction".into()),
            password: Some("pw".into()),
            destinations: destinations.iter().map(|d| d.to_string()).collect(),
            caller_ids: caller_ids.iter().map(|c| c.to_string()).collect(),
        }),
        media_encryption: Default::default(),
    })
    .unwrap()
}

fn inbound_trunk(id: &str) -> Trunk {
    Trunk::from_spec(TrunkSpec {
        id: Some(id.into()),
        name: id.into(),
        allowed_addresses: vec!["10.0.0.0/8".parse().unwrap()],
        username: None,
        password: None,
        numbers: vec![],
        outbound: None,
        media_encryption: Default::default(),
    })
    .unwrap()
}

fn ask<'a>(to: &'a str, from: Option<&'a str>, trunk: Option<&'a str>) -> DialAsk<'a> {
    DialAsk { to, from, trunk }
}

fn refusal(result: Result<Route, DialRefusal>) -> (u16, &'static str) {
    result.expect_err("refused").status()
}

#[test]
fn a_number_goes_through_the_only_outbound_trunk_with_its_caller_id() {
    let trunks =
        [inbound_trunk("office"), outbound_trunk("carrier", "sip.carrier.example:5080", &["+1555"], &["+15550100"])];
    let off = DirectDial::default();
    for to in ["+15551234", "+1 (555) 123-4", "tel:+15551234;phone-context=x", "sip:+15551234@SIP.carrier.example:5080"]
    {
        let Ok(Route::Trunk { trunk, target, caller_id }) = route(&trunks, &off, ask(to, None, None)) else {
            panic!("{to} should go through the carrier");
        };
        assert_eq!(trunk.id, "carrier");
        assert_eq!(target.to_string(), "sip:+15551234@sip.carrier.example:5080");
        assert_eq!(caller_id, "+15550100", "the first caller id by default");
    }
    let named = route(&trunks, &off, ask("+15551234", Some("sip:+15550100@junction"), Some("carrier")));
    assert!(matches!(named, Ok(Route::Trunk { caller_id, .. }) if caller_id == "+15550100"));
}

#[test]
fn the_attack_of_issue_12_is_refused() {
    // A room's token asked for sip:+15551234@<any host> as the CEO of a bank.
    let trunks = [outbound_trunk("carrier", "192.0.2.10", &["+1555"], &["+15550100"])];
    let off = DirectDial::default();
    let spoofed = ask("+15551234", Some("sip:ceo@bank.example"), None);
    assert_eq!(refusal(route(&trunks, &off, spoofed)), (403, "caller_id_not_allowed"));
    let anywhere = ask("sip:+15551234@10.0.0.1:5060;transport=tcp", None, None);
    assert_eq!(refusal(route(&trunks, &off, anywhere)), (403, "direct_dial_disabled"));
    let named_elsewhere = ask("sip:+15551234@10.0.0.1", None, Some("carrier"));
    assert_eq!(refusal(route(&trunks, &off, named_elsewhere)), (422, "target_not_on_trunk"));
    assert_eq!(refusal(route(&trunks, &off, ask("+4420123", None, None))), (403, "destination_not_allowed"));
    assert!(route(&trunks, &off, ask("+1555", None, None)).is_ok(), "the prefix itself is a number it may call");
    assert_eq!(refusal(route(&[], &off, ask("sip:bob@10.0.0.1", None, None))), (403, "direct_dial_disabled"));
}

#[test]
fn trunks_are_named_when_there_are_several_and_must_be_outbound() {
    let trunks = [
        inbound_trunk("office"),
        outbound_trunk("us", "192.0.2.10", &["+1"], &["+15550100"]),
        outbound_trunk("uk", "192.0.2.11", &["+44"], &["+442000000"]),
    ];
    let off = DirectDial::default();
    assert_eq!(refusal(route(&trunks, &off, ask("+15551234", None, None))), (422, "trunk_required"));
    assert_eq!(refusal(route(&trunks, &off, ask("+15551234", None, Some("office")))), (422, "trunk_not_outbound"));
    assert_eq!(refusal(route(&trunks, &off, ask("+15551234", None, Some("nope")))), (404, "trunk_not_found"));
    assert_eq!(refusal(route(&trunks, &off, ask("+15551234", None, Some("uk")))), (403, "destination_not_allowed"));
    assert!(route(&trunks, &off, ask("+15551234", None, Some("us"))).is_ok());
    assert_eq!(refusal(route(&trunks[..1], &off, ask("+15551234", None, None))), (422, "no_outbound_trunk"));
    let not_a_number = ask("sip:bob@192.0.2.10", None, Some("us"));
    assert_eq!(refusal(route(&trunks, &off, not_a_number)), (422, "invalid_number"));
    for bad in ["mailto:bob@example.com", "not a uri", "sips:bob@x", "tel:abc", ""] {
        assert_eq!(refusal(route(&trunks, &off, ask(bad, None, Some("us")))), (400, "invalid_field"), "{bad}");
    }
    let injected = ask("+15551234", Some("+1555\r\nX-Evil: 1"), Some("us"));
    assert_eq!(refusal(route(&trunks, &off, injected)), (400, "invalid_field"));
}

#[test]
fn direct_dial_is_off_by_default_and_then_limited_to_listed_hosts() {
    let hosts = ["pbx.example.com:5070".to_string(), "127.0.0.0/8".into(), "192.0.2.7".into()];
    let direct = DirectDial::from_config(true, &hosts).unwrap();
    let to = |uri: &str| route(&[], &direct, ask(uri, Some("standup"), None));
    for allowed in ["sip:bob@127.0.0.1:5999", "sip:bob@pbx.example.com:5070", "sip:bob@192.0.2.7;transport=tcp"] {
        assert!(matches!(to(allowed), Ok(Route::Direct { caller_id: Some(ref c), .. }) if c == "standup"), "{allowed}");
    }
    for refused in ["sip:bob@pbx.example.com", "sip:bob@10.0.0.1", "sip:bob@192.0.2.8", "sip:bob@evil.example"] {
        assert_eq!(refusal(to(refused)), (403, "direct_dial_host_not_allowed"), "{refused}");
    }
    assert!(DirectDial::from_config(true, &["bad host!".into()]).is_err());
    // The same request with direct dial off.
    assert_eq!(
        refusal(route(&[], &DirectDial::default(), ask("sip:bob@127.0.0.1", None, None))),
        (403, "direct_dial_disabled")
    );
}

#[test]
fn outbound_specs_are_validated() {
    let spec = |address: &str, destinations: &[&str], caller_ids: &[&str]| OutboundSpec {
        address: address.into(),
        transport: Default::default(),
        register: false,
        register_expires_s: 3600,
        username: None,
        password: None,
        destinations: destinations.iter().map(|d| d.to_string()).collect(),
        caller_ids: caller_ids.iter().map(|c| c.to_string()).collect(),
    };
    let ok = Outbound::from_spec(spec("[2001:db8::1]:5070", &["+"], &["junction"])).unwrap();
    assert_eq!((ok.host.as_str(), ok.port), ("[2001:db8::1]", 5070));
    assert_eq!(Outbound::from_spec(spec("a b", &["+1"], &["x"])), Err(OutboundError::BadAddress("a b".into())));
    assert_eq!(Outbound::from_spec(spec("h:99999", &["+1"], &["x"])), Err(OutboundError::BadAddress("h:99999".into())));
    assert_eq!(Outbound::from_spec(spec("h", &[], &["x"])), Err(OutboundError::NoDestinations));
    assert_eq!(Outbound::from_spec(spec("h", &["+1a"], &["x"])), Err(OutboundError::BadPrefix("+1a".into())));
    assert_eq!(Outbound::from_spec(spec("h", &["+1"], &[])), Err(OutboundError::NoCallerIds));
    assert_eq!(Outbound::from_spec(spec("h", &["+1"], &["a>b"])), Err(OutboundError::BadCallerId("a>b".into())));
    let half = OutboundSpec { username: Some("u".into()), ..spec("h", &["+1"], &["x"]) };
    assert_eq!(Outbound::from_spec(half), Err(OutboundError::HalfCredentials));
    // The API's view hides the password.
    let trunk = outbound_trunk("carrier", "192.0.2.10", &["+1"], &["+15550100"]);
    let shown = trunk.describe();
    assert!(shown["outbound"].get("password").is_none(), "{shown}");
    assert_eq!(shown["outbound"]["digest_auth"], true);
    assert_eq!(shown["outbound"]["destinations"], serde_json::json!(["+1"]));
}
