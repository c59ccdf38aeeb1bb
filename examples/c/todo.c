/*
 * todo.c — two mesh clients syncing a to-do list through a hub, from C.
 *
 *   make -C examples/c run              # through an in-process hub
 *   ./todo http://hub.example/ TOKEN    # through a hub URL (needs the HTTP transport)
 *
 * Ann creates a folder with a "todos" feed, invites Bob as an author, and both write items;
 * each sees the other's after a sync. Every call's status is checked; every string and handle
 * the library returns is freed, so the program is clean under valgrind.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mesh.h"

static int failures = 0;

/* Checks a status; on failure prints the error detail, frees it, and counts the failure. */
static int check(const char *what, mesh_status status, mesh_error *err) {
    if (status == MESH_STATUS_OK) return 1;
    fprintf(stderr, "%s failed: %s: %s\n", what, mesh_status_name(status),
            err ? mesh_error_message(err) : "(no detail)");
    mesh_error_free(err);
    failures++;
    return 0;
}

#define CALL(what, expr)                 \
    do {                                 \
        mesh_error *err = NULL;          \
        check(what, (expr), err);        \
    } while (0)

struct counter {
    atomic_int events;
    atomic_int finalized;
};

/* Runs on a runtime thread of Ann's client. */
static void on_event(void *user_data, const char *event_json) {
    struct counter *c = user_data;
    atomic_fetch_add(&c->events, 1);
    (void)event_json;
}

static void on_finalize(void *user_data) {
    struct counter *c = user_data;
    atomic_store(&c->finalized, 1);
}

static mesh_client *open_client(mesh_hub *hub, const char *user, const char *device,
                                const char *url, const char *token) {
    char config[1024];
    if (url) {
        snprintf(config, sizeof config,
                 "{\"user\": \"%s\", \"device\": \"%s\", \"sync\": {\"auto\": false},"
                 " \"remotes\": [{\"name\": \"hub\", \"url\": \"%s\", \"token\": \"%s\"}]}",
                 user, device, url, token ? token : "");
    } else {
        snprintf(config, sizeof config,
                 "{\"user\": \"%s\", \"device\": \"%s\", \"sync\": {\"auto\": false},"
                 " \"remotes\": [{\"name\": \"hub\", \"in_process\": true}]}",
                 user, device);
    }
    mesh_client *client = NULL;
    mesh_error *err = NULL;
    mesh_status s = mesh_client_open(config, hub, &client, &err);
    if (s == MESH_STATUS_UNSUPPORTED) {
        fprintf(stderr, "%s: %s\n", mesh_status_name(s), mesh_error_message(err));
        mesh_error_free(err);
        return NULL;
    }
    check("mesh_client_open", s, err);
    return client;
}

/* Prints the titles of a feed's entries (a JSON array) without a JSON parser: the example
 * only needs to show them. */
static int list(const char *who, mesh_client *c, const char *folder, const char *needle) {
    char *json = NULL;
    mesh_error *err = NULL;
    if (!check("mesh_client_query", mesh_client_query(c, folder, "todos", NULL, &json, &err), err))
        return 0;
    printf("%s sees: %s\n", who, json);
    int found = needle == NULL || strstr(json, needle) != NULL;
    mesh_string_free(json);
    return found;
}

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : NULL;
    const char *token = argc > 2 ? argv[2] : NULL;
    printf("mesh %s\n", mesh_version());

    mesh_hub *hub = NULL;
    CALL("mesh_hub_new", mesh_hub_new(&hub, &err));
    mesh_client *ann = open_client(hub, "ann", "ann-laptop", url, token);
    mesh_client *bob = open_client(hub, "bob", "bob-phone", url, token);
    if (!ann || !bob) {
        mesh_client_free(ann);
        mesh_client_free(bob);
        mesh_hub_free(hub);
        return url ? 2 : 1;
    }

    struct counter counter = {0, 0};
    mesh_subscription *sub = NULL;
    CALL("mesh_client_subscribe",
         mesh_client_subscribe(ann, NULL, NULL, on_event, &counter, on_finalize, &sub, &err));

    /* Ann: a folder, a feed, a first item; Bob is invited as an author. */
    char *folder = NULL;
    CALL("mesh_client_create_folder",
         mesh_client_create_folder(ann, "Groceries", "app/todo", &folder, &err));
    if (!folder) return 1;
    CALL("mesh_client_create_feed", mesh_client_create_feed(ann, folder, "todos", "To do", &err));
    CALL("put milk", mesh_client_put_with_id(ann, folder, "todos", "milk",
                                             "{\"title\": \"Buy milk\", \"content\": {\"done\": false}}",
                                             NULL, &err));
    CALL("mesh_client_invite", mesh_client_invite(ann, folder, "bob", "author", NULL, &err));
    CALL("ann sync", mesh_client_sync_now(ann, NULL, &err));

    /* Bob: sees the invitation, accepts, syncs, adds an item. */
    CALL("bob sync", mesh_client_sync_now(bob, NULL, &err));
    char *invitations = NULL;
    CALL("mesh_client_invitations", mesh_client_invitations(bob, &invitations, &err));
    printf("bob's invitations: %s\n", invitations ? invitations : "?");
    mesh_string_free(invitations);
    CALL("mesh_client_accept", mesh_client_accept(bob, folder, NULL, &err));
    /* The first sync pushes the acceptance (the hub then lets Bob read the folder), the
     * second pulls the folder's feeds. */
    CALL("bob sync", mesh_client_sync_now(bob, NULL, &err));
    CALL("bob sync", mesh_client_sync_now(bob, NULL, &err));
    if (!list("bob", bob, folder, "Buy milk")) {
        fprintf(stderr, "bob does not see ann's item\n");
        failures++;
    }
    CALL("put bread", mesh_client_put_with_id(bob, folder, "todos", "bread",
                                              "{\"title\": \"Buy bread\", \"content\": {\"done\": false}}",
                                              NULL, &err));

    /* An author may not change someone else's item: a status and a message, no crash. */
    {
        mesh_error *err = NULL;
        mesh_status s = mesh_client_put_with_id(bob, folder, "todos", "milk",
                                                "{\"title\": \"Buy milk\", \"content\": {\"done\": true}}",
                                                NULL, &err);
        printf("bob ticks ann's item: %s (%s)\n", mesh_status_name(s), mesh_error_message(err));
        if (s != MESH_STATUS_PERMISSION_DENIED) failures++;
        mesh_error_free(err);
    }
    CALL("bob sync", mesh_client_sync_now(bob, NULL, &err));

    /* Ann: gets Bob's item, ticks her own. */
    char *report = NULL;
    CALL("ann sync", mesh_client_sync_now(ann, &report, &err));
    printf("ann's sync: %s\n", report ? report : "?");
    mesh_string_free(report);
    CALL("tick milk", mesh_client_put_with_id(ann, folder, "todos", "milk",
                                              "{\"title\": \"Buy milk\", \"content\": {\"done\": true}}",
                                              NULL, &err));
    char *entry = NULL;
    CALL("mesh_client_get", mesh_client_get(ann, folder, "todos", "bread", &entry, &err));
    printf("ann gets bread: %s\n", entry ? "yes" : "no");
    mesh_string_free(entry);
    if (!list("ann", ann, folder, "Buy bread")) {
        fprintf(stderr, "ann does not see bob's item\n");
        failures++;
    }
    CALL("ann sync", mesh_client_sync_now(ann, NULL, &err));
    CALL("bob sync", mesh_client_sync_now(bob, NULL, &err));
    if (!list("bob", bob, folder, "\"done\":true")) {
        fprintf(stderr, "bob does not see the ticked item\n");
        failures++;
    }

    /* The poll queue: drain Ann's events. */
    int polled = 0;
    for (;;) {
        char *event = NULL;
        mesh_status s = mesh_client_poll_event(ann, 100, &event, NULL);
        if (s != MESH_STATUS_OK) break;
        if (polled == 0) printf("first polled event: %s\n", event);
        polled++;
        mesh_string_free(event);
    }
    printf("ann: %d events polled, %d delivered to the callback\n", polled,
           atomic_load(&counter.events));
    if (polled == 0) failures++;

    mesh_subscription_free(sub);
    if (!atomic_load(&counter.finalized)) {
        fprintf(stderr, "the finalizer did not run\n");
        failures++;
    }

    /* After close, calls fail with MESH_STATUS_CLOSED; free releases the handle. */
    mesh_client_close(ann);
    {
        char *json = NULL;
        mesh_status s = mesh_client_folders(ann, &json, NULL);
        printf("after close: %s\n", mesh_status_name(s));
        if (s != MESH_STATUS_CLOSED) failures++;
    }
    mesh_string_free(folder);
    mesh_client_free(ann);
    mesh_client_free(bob);
    mesh_hub_free(hub);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
