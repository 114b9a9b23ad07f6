"""Run by ``python manage.py test pageviews``, on Django's test database."""

from __future__ import annotations

import threading
import uuid

from django.conf import settings
from django.db import connection, models
from django.db.models import F
from django.test import Client, SimpleTestCase, TestCase, TransactionTestCase, override_settings
from django.utils import timezone

from pageviews.models import Hit, LastVisit
from writebehind import PostgresUpsert
from writebehind.django import close_queues, get_queue

LONG_PAGE = "p" * 201  # longer than the column's 200 characters: the database refuses it


@override_settings(WRITEBEHIND={**settings.WRITEBEHIND, "EAGER": True})
class EagerLastVisits(TestCase):
    """The way to test views that put rows: with EAGER, put() writes through Django's own
    connection inside the test's transaction, which rolls the rows back after each test."""

    def tearDown(self) -> None:
        close_queues()

    def visit(self, page: str, referrer: str) -> None:
        answer = self.client.post(f"/visits/{page}", headers={"Referer": referrer})
        self.assertEqual(answer.status_code, 202)

    # The next two tests each see their own row only, whichever runs first: the other's row
    # went away with the other test's transaction.
    def test_a_visit_is_in_the_table_when_the_view_returns(self) -> None:
        self.visit("home", "https://example.com/a")
        self.visit("home", "https://example.com/b")
        self.assertEqual(
            list(LastVisit.objects.values_list("page", "views", "referrer")),
            [("home", 2, "https://example.com/b")],
        )
        visit = LastVisit.objects.get()
        self.assertLess(visit.first_seen, visit.last_seen)  # two times, each kept

    def test_rows_of_the_other_tests_were_rolled_back(self) -> None:
        self.visit("about", "https://example.com/c")
        self.assertEqual(list(LastVisit.objects.values_list("page", flat=True)), ["about"])

    def test_a_refused_row_goes_to_on_failure_and_the_test_goes_on(self) -> None:
        with self.assertLogs("pageviews.failures", "ERROR") as logs:
            self.visit(LONG_PAGE, "https://example.com/d")
        self.assertIn(f"['{LONG_PAGE}']", logs.output[0])
        self.assertIn("value too long", logs.output[0])
        self.visit("contact", "https://example.com/e")  # the test's transaction is still usable
        self.assertEqual(list(LastVisit.objects.values_list("page", flat=True)), ["contact"])
        metrics = get_queue("last_visits").metrics()
        self.assertEqual((metrics.total_persisted, metrics.total_failed), (1, 1))


class WriteBehindLastVisits(TransactionTestCase):
    """The queues as in production: rows are written by a worker thread, through connections
    of their own, and committed; TransactionTestCase empties the tables after each test."""

    def tearDown(self) -> None:
        close_queues()  # drained, and no connection left to the test database

    def test_visits_are_counted_behind_and_the_last_referrer_wins(self) -> None:
        for i in range(300):
            answer = self.client.post(
                f"/visits/page/{i % 30}", headers={"Referer": f"https://example.com/{i}"}
            )
            self.assertEqual(answer.status_code, 202)
        self.assertTrue(get_queue("last_visits").flush(timeout=30))
        self.assertEqual(LastVisit.objects.count(), 30)
        self.assertEqual(set(LastVisit.objects.values_list("views", flat=True)), {10})
        self.assertEqual(LastVisit.objects.get(page="page/29").referrer, "https://example.com/299")
        self.assertFalse(LastVisit.objects.filter(first_seen__gt=F("last_seen")).exists())

    def test_every_visit_from_several_threads_is_counted(self) -> None:
        threads, visits = 4, 50
        statuses: list[int] = []

        def visit() -> None:
            client = Client()
            for _ in range(visits):
                statuses.append(client.post("/visits/home").status_code)

        workers = [threading.Thread(target=visit) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        self.assertEqual(statuses, [202] * threads * visits)
        self.assertTrue(get_queue("last_visits").flush(timeout=30))
        self.assertEqual(LastVisit.objects.get(page="home").views, threads * visits)
        # A later batch adds to the row in the table.
        self.client.post("/visits/home")
        self.assertTrue(get_queue("last_visits").flush(timeout=30))
        self.assertEqual(LastVisit.objects.get(page="home").views, threads * visits + 1)

    def test_a_refused_row_goes_to_on_failure_and_the_others_are_written(self) -> None:
        with self.assertLogs("pageviews.failures", "ERROR") as logs:
            self.client.post("/visits/good")
            self.client.post(f"/visits/{LONG_PAGE}")
            self.assertTrue(get_queue("last_visits").flush(timeout=30))
        self.assertEqual(list(LastVisit.objects.values_list("page", flat=True)), ["good"])
        self.assertIn(f"['{LONG_PAGE}']", logs.output[0])

    def test_one_queue_per_process(self) -> None:
        # The rows of the tests above reach the ORM's test database: the queue follows it.
        self.assertTrue(connection.settings_dict["NAME"].startswith("test_"))
        self.assertIs(get_queue("last_visits"), get_queue("last_visits"))

    def test_override_settings_gives_queues_of_the_new_settings(self) -> None:
        before = get_queue("last_visits")
        queues = {"last_visits": {"table": "pageviews_lastvisit", "key": "page", "name": "other"}}
        with self.settings(WRITEBEHIND={"QUEUES": queues}):
            during = get_queue("last_visits")
            self.assertIsNot(during, before)
            self.assertEqual(during.name, "other")
        self.assertIsNot(get_queue("last_visits"), during)


@override_settings(WRITEBEHIND={**settings.WRITEBEHIND, "EAGER": True})
class EagerHits(TestCase):
    """Model instances and Mappings of the model, with EAGER: defaults made at put(), deletes,
    and a row whose foreign key is dangling refused as in production (Django creates foreign
    keys DEFERRABLE INITIALLY DEFERRED: the eager write checks them at once)."""

    def tearDown(self) -> None:
        close_queues()

    def test_an_instance_is_written_with_the_defaults_save_would_make(self) -> None:
        answer = self.client.post("/hits/", {"path": "/home"}, headers={"User-Agent": "ua"})
        self.assertEqual(answer.status_code, 202)
        hit = Hit.objects.get()
        self.assertEqual(str(hit.id), answer.json()["id"])
        self.assertEqual((hit.path, hit.meta), ("/home", {"agent": "ua"}))
        self.assertIsNotNone(hit.at)

    def test_a_mapping_gets_the_models_defaults_too(self) -> None:
        visit = LastVisit.objects.create(
            page="p", views=1, first_seen=timezone.now(), last_seen=timezone.now()
        )
        get_queue("hits").put({"path": "/m", "visit_id": visit.pk})
        hit = Hit.objects.get()
        self.assertEqual((hit.path, hit.meta, hit.visit_id), ("/m", {}, visit.pk))
        self.assertIsNotNone(hit.at)

    def test_a_dangling_foreign_key_goes_to_on_failure_and_the_test_goes_on(self) -> None:
        with self.assertLogs("pageviews.failures", "ERROR") as logs:
            get_queue("hits").put(Hit(path="/x", visit_id=10**9))
        self.assertIn("violates foreign key constraint", logs.output[0])
        self.assertEqual(Hit.objects.count(), 0)
        get_queue("hits").put(Hit(path="/y"))  # the test's transaction is still usable
        self.assertEqual(list(Hit.objects.values_list("path", flat=True)), ["/y"])
        metrics = get_queue("hits").metrics()
        self.assertEqual((metrics.total_persisted, metrics.total_failed), (1, 1))

    def test_the_tests_own_pending_violation_is_not_the_rows(self) -> None:
        """A row the test made out of order (fixed before its end) does not get a valid
        eager row refused."""
        dangling = Hit.objects.create(path="/pending", visit_id=10**9)  # deferred: accepted
        get_queue("hits").put(Hit(path="/valid"))
        self.assertEqual(get_queue("hits").metrics().total_failed, 0)
        self.assertTrue(Hit.objects.filter(path="/valid").exists())
        dangling.delete()  # fixed before the end of the test's transaction

    def test_a_foreign_key_takes_the_key_of_an_object_saved_after_it_was_assigned(self) -> None:
        now = timezone.now()
        visit = LastVisit(page="p", views=1, first_seen=now, last_seen=now)
        hit = Hit(path="/x", visit=visit)  # no key yet: Django's save() reads it then, too
        visit.save()
        get_queue("hits").put(hit)
        self.assertEqual(Hit.objects.get().visit_id, visit.pk)
        unsaved = LastVisit(page="q", views=1, first_seen=now, last_seen=now)
        with self.assertRaisesRegex(ValueError, "not saved"):
            get_queue("hits").put(Hit(path="/y", visit=unsaved))

    def test_a_delete_removes_the_row(self) -> None:
        hit = Hit(path="/gone")
        get_queue("hits").put(hit)
        self.assertEqual(self.client.post(f"/hits/{hit.id}").status_code, 202)
        self.assertFalse(Hit.objects.exists())
        self.assertEqual(get_queue("hits").metrics().total_deleted, 1)


class WriteBehindHits(TransactionTestCase):
    """Instances and deletes written behind by the worker, in put order."""

    def tearDown(self) -> None:
        close_queues()

    def test_hits_and_deletes_are_written_in_order(self) -> None:
        ids = [self.client.post("/hits/", {"path": f"/{i}"}).json()["id"] for i in range(100)]
        for hit in ids[:10]:
            self.assertEqual(self.client.post(f"/hits/{hit}").status_code, 202)
        again = Hit(id=uuid.UUID(ids[0]), path="/again")  # a put after its delete stays
        get_queue("hits").put(again)
        self.assertTrue(get_queue("hits").flush(timeout=30))
        self.assertEqual(Hit.objects.count(), 91)
        self.assertEqual(Hit.objects.get(id=ids[0]).path, "/again")
        metrics = get_queue("hits").metrics()
        self.assertEqual((metrics.total_persisted, metrics.total_deleted), (111, 10))


@override_settings(WRITEBEHIND={**settings.WRITEBEHIND, "EAGER": True})
class EagerHitsAgain(TestCase):
    """An instance put again, as save() again: ``auto_now`` is set anew; an instance whose
    fields a query deferred is refused, not written with defaults over the table's values."""

    def tearDown(self) -> None:
        close_queues()

    def test_auto_now_is_set_at_every_put_of_an_instance(self) -> None:
        hit = Hit(path="/a")
        get_queue("hits").put(hit)
        first = Hit.objects.get().seen
        self.assertEqual(hit.seen, first)  # set on the instance, as save() sets it
        get_queue("hits").put(hit)
        self.assertGreater(Hit.objects.get().seen, first)
        self.assertEqual(Hit.objects.get().at, hit.at)  # auto_now_add: set once

    def test_an_instance_with_deferred_fields_is_refused(self) -> None:
        get_queue("hits").put(Hit(path="/a", meta={"kept": "yes"}))
        partial = Hit.objects.defer("meta").get()
        partial.path = "/b"
        with self.assertRaisesRegex(ValueError, "'meta'.*not loaded"):
            get_queue("hits").put(partial)
        self.assertEqual(Hit.objects.get().meta, {"kept": "yes"})


class Place(models.Model):
    name: models.TextField[str, str] = models.TextField()

    class Meta:
        app_label = "pageviews"
        managed = False


class Restaurant(Place):
    class Meta:
        app_label = "pageviews"
        managed = False


class ModelsThatSpanTables(SimpleTestCase):
    def test_a_multi_table_inheritance_child_is_refused(self) -> None:
        with self.assertRaisesRegex(TypeError, "multi-table inheritance"):
            PostgresUpsert("dbname=x", Restaurant)
