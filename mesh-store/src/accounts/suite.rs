//! The conformance suite every [`AccountStore`] passes: call [`run_all`] with a factory of
//! empty stores from the implementation's tests.

use mesh_core::id::{DeviceId, UserId};

use super::{AccountStore, AddDevice};

fn user(s: &str) -> UserId {
    s.parse().expect("a valid user id")
}

fn device(s: &str) -> DeviceId {
    s.parse().expect("a valid device id")
}

/// Runs every check, each on a fresh store.
pub fn run_all<S: AccountStore>(mut factory: impl FnMut() -> S) {
    users(&factory());
    devices_and_tokens(&factory());
    revocation(&factory());
    certificates_and_keys(&factory());
    enrollment_codes(&factory());
    revocation_requests_and_removal(&factory());
}

/// Codes are minted by a live device of the user and work once, before they expire, while
/// their minter is live; the device they register remembers its enroller until confirmed.
pub fn enrollment_codes<S: AccountStore>(s: &S) {
    s.add_user(&user("ann"), 1).unwrap();
    s.add_user(&user("bob"), 1).unwrap();
    s.add_device(
        &user("ann"),
        &device("laptop"),
        "L",
        "laptop",
        1,
        "t1",
        None,
    )
    .unwrap();
    assert!(s
        .add_code(&user("ann"), &device("laptop"), "c1", 100)
        .unwrap());
    assert!(
        !s.add_code(&user("bob"), &device("laptop"), "c2", 100)
            .unwrap(),
        "a device mints codes for its own user only"
    );
    assert_eq!(
        s.redeem_code("c1", 50).unwrap(),
        Some((user("ann"), device("laptop")))
    );
    assert_eq!(s.redeem_code("c1", 51).unwrap(), None, "used once");
    assert!(s
        .add_code(&user("ann"), &device("laptop"), "c3", 100)
        .unwrap());
    assert_eq!(s.redeem_code("c3", 100).unwrap(), None, "expired");
    assert_eq!(
        s.redeem_code("c3", 10).unwrap(),
        None,
        "an expired try uses it up"
    );
    assert_eq!(s.redeem_code("nope", 10).unwrap(), None);
    assert_eq!(
        s.add_device(
            &user("ann"),
            &device("phone"),
            "P",
            "phone",
            2,
            "t2",
            Some(&device("laptop"))
        )
        .unwrap(),
        AddDevice::Added
    );
    let phone = |s: &S| {
        s.all_devices()
            .unwrap()
            .into_iter()
            .find(|d| d.id.as_str() == "phone")
            .unwrap()
    };
    assert_eq!(phone(s).enrolled_by, Some(device("laptop")));
    assert!(s.confirm_device(&device("phone")).unwrap());
    assert_eq!(phone(s).enrolled_by, None);
    assert!(!s.confirm_device(&device("phone")).unwrap(), "once");
    // A revoked minter's codes stop working.
    assert!(s
        .add_code(&user("ann"), &device("laptop"), "c4", 100)
        .unwrap());
    s.revoke_device(&device("laptop"), 3).unwrap();
    assert_eq!(s.redeem_code("c4", 10).unwrap(), None);
    assert!(!s
        .add_code(&user("ann"), &device("laptop"), "c5", 100)
        .unwrap());
    // Last seen: later times only.
    s.touch(&[(device("phone"), 40), (device("nope"), 40)])
        .unwrap();
    s.touch(&[(device("phone"), 30)]).unwrap();
    assert_eq!(phone(s).last_seen, Some(40));
}

/// A revocation asked by one device waits for another live device; removing a user revokes
/// its devices and keeps its id taken.
pub fn revocation_requests_and_removal<S: AccountStore>(s: &S) {
    s.add_user(&user("ann"), 1).unwrap();
    for (d, t) in [("a", "ta"), ("b", "tb"), ("c", "tc")] {
        s.add_device(&user("ann"), &device(d), d, "x", 1, t, None)
            .unwrap();
    }
    assert!(s
        .request_revocation(&device("c"), &device("a"), 2)
        .unwrap()
        .is_empty());
    assert!(
        s.request_revocation(&device("c"), &device("a"), 3)
            .unwrap()
            .is_empty(),
        "asking twice from one device is still one device"
    );
    assert_eq!(
        s.request_revocation(&device("c"), &device("b"), 4).unwrap(),
        vec![device("a")]
    );
    s.revoke_device(&device("a"), 5).unwrap();
    assert!(
        s.request_revocation(&device("c"), &device("b"), 6)
            .unwrap()
            .is_empty(),
        "a revoked device's request no longer counts"
    );
    assert_eq!(
        s.remove_user(&user("ann"), 7).unwrap(),
        Some(vec![device("b"), device("c")])
    );
    assert_eq!(s.remove_user(&user("ann"), 8).unwrap(), None, "once");
    assert!(!s.has_user(&user("ann")).unwrap());
    assert!(s.users().unwrap().is_empty());
    assert_eq!(s.principal("tb").unwrap(), None);
    assert!(
        !s.add_user(&user("ann"), 9).unwrap(),
        "a removed id is never reused"
    );
    assert_eq!(
        s.add_device(&user("ann"), &device("d"), "d", "x", 9, "td", None)
            .unwrap(),
        AddDevice::NoSuchUser
    );
}

/// Users are created once and listed in order.
pub fn users<S: AccountStore>(s: &S) {
    assert!(!s.has_user(&user("ann")).unwrap());
    assert!(s.add_user(&user("bob"), 1).unwrap());
    assert!(s.add_user(&user("ann"), 2).unwrap());
    assert!(
        !s.add_user(&user("ann"), 3).unwrap(),
        "a second add is refused"
    );
    assert!(s.has_user(&user("ann")).unwrap());
    assert_eq!(s.users().unwrap(), vec![user("ann"), user("bob")]);
}

/// Devices belong to existing users, ids are unique, tokens lead to their device.
pub fn devices_and_tokens<S: AccountStore>(s: &S) {
    assert_eq!(
        s.add_device(
            &user("ann"),
            &device("laptop"),
            "L",
            "laptop",
            1,
            "h1",
            None
        )
        .unwrap(),
        AddDevice::NoSuchUser
    );
    s.add_user(&user("ann"), 1).unwrap();
    s.add_user(&user("bob"), 1).unwrap();
    assert_eq!(
        s.add_device(
            &user("ann"),
            &device("laptop"),
            "L",
            "laptop",
            2,
            "h1",
            None
        )
        .unwrap(),
        AddDevice::Added
    );
    assert_eq!(
        s.add_device(&user("bob"), &device("laptop"), "B", "phone", 3, "h9", None)
            .unwrap(),
        AddDevice::Exists,
        "device ids are unique across users"
    );
    assert_eq!(
        s.principal("h9").unwrap(),
        None,
        "a refused device's token is not kept"
    );
    assert!(s.add_token(&device("laptop"), "h2", 4).unwrap());
    assert!(!s.add_token(&device("nope"), "h3", 4).unwrap());
    for h in ["h1", "h2"] {
        assert_eq!(
            s.principal(h).unwrap(),
            Some((user("ann"), device("laptop")))
        );
    }
    assert_eq!(s.principal("h3").unwrap(), None);
    assert!(s.is_live(&user("ann"), &device("laptop")).unwrap());
    assert!(!s.is_live(&user("bob"), &device("laptop")).unwrap());
    let ds = s.devices(&user("ann")).unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(
        (ds[0].id.as_str(), ds[0].owner.as_str(), ds[0].name.as_str()),
        ("laptop", "ann", "L")
    );
    assert_eq!((ds[0].kind.as_str(), ds[0].created_at), ("laptop", 2));
    assert!(s.devices(&user("bob")).unwrap().is_empty());
}

/// Revoking a device removes its tokens for good and keeps its id taken.
pub fn revocation<S: AccountStore>(s: &S) {
    s.add_user(&user("ann"), 1).unwrap();
    s.add_device(&user("ann"), &device("phone"), "P", "phone", 1, "t1", None)
        .unwrap();
    s.add_device(
        &user("ann"),
        &device("tablet"),
        "T",
        "tablet",
        1,
        "t2",
        None,
    )
    .unwrap();
    assert_eq!(
        s.revoke_device(&device("phone"), 5).unwrap(),
        Some(user("ann"))
    );
    assert_eq!(s.revoke_device(&device("phone"), 6).unwrap(), None, "once");
    assert_eq!(s.revoke_device(&device("nope"), 6).unwrap(), None);
    assert_eq!(s.principal("t1").unwrap(), None);
    assert!(
        s.principal("t2").unwrap().is_some(),
        "other devices keep working"
    );
    assert!(!s.add_token(&device("phone"), "t3", 7).unwrap());
    assert!(!s.is_live(&user("ann"), &device("phone")).unwrap());
    assert_eq!(
        s.add_device(&user("ann"), &device("phone"), "P", "phone", 8, "t4", None)
            .unwrap(),
        AddDevice::Exists,
        "a revoked id is never reused"
    );
    let live: Vec<_> = s.devices(&user("ann")).unwrap();
    assert_eq!(live.len(), 1);
    let all = s.all_devices().unwrap();
    let phone = all.iter().find(|d| d.id.as_str() == "phone").unwrap();
    assert_eq!(phone.revoked_at, Some(5));
}

/// Certificates are kept per device (replaced on renewal); keys are set once.
pub fn certificates_and_keys<S: AccountStore>(s: &S) {
    s.add_user(&user("ann"), 1).unwrap();
    s.add_device(&user("ann"), &device("laptop"), "L", "laptop", 1, "t", None)
        .unwrap();
    s.set_certificate(&device("laptop"), "{\"v\":1}", 2)
        .unwrap();
    s.set_certificate(&device("laptop"), "{\"v\":2}", 3)
        .unwrap();
    let all = s.all_devices().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].certificate.as_deref(), Some("{\"v\":2}"));
    assert_eq!(s.key("authority").unwrap(), None);
    assert_eq!(s.init_key("authority", "seed-1").unwrap(), "seed-1");
    assert_eq!(
        s.init_key("authority", "seed-2").unwrap(),
        "seed-1",
        "the first key stays"
    );
    assert_eq!(s.key("authority").unwrap().as_deref(), Some("seed-1"));
}
