"""Run by ``python manage.py test pageviews``, on Django's test database."""

from __future__ import annotations

from django.db import connection
from django.test import TransactionTestCase

from pageviews.models import PageView
from writebehind.django import close_queues, get_queue


class WriteBehindPageViews(TransactionTestCase):
    def tearDown(self) -> None:
        close_queues()  # drained, and no connection left to the test database

    def test_views_are_written_behind_and_the_last_count_wins(self) -> None:
        for i in range(300):
            answer = self.client.post(f"/views/page/{i % 30}?views={i}")
            self.assertEqual(answer.status_code, 202)
        self.assertTrue(get_queue("page_views").flush(timeout=30))
        self.assertEqual(PageView.objects.count(), 30)
        self.assertEqual(PageView.objects.get(page="page/29").views, 299)

    def test_a_refused_row_goes_to_on_failure_and_the_others_are_written(self) -> None:
        with self.assertLogs("pageviews.failures", "ERROR") as logs:
            self.client.post("/views/good?views=1")
            self.client.post("/views/bad?views=-1")
            self.assertTrue(get_queue("page_views").flush(timeout=30))
        self.assertEqual(list(PageView.objects.values_list("page", flat=True)), ["good"])
        self.assertIn("['bad']", logs.output[0])

    def test_one_queue_per_process(self) -> None:
        # The rows of the tests above reach the ORM's test database: the queue follows it.
        self.assertTrue(connection.settings_dict["NAME"].startswith("test_"))
        self.assertIs(get_queue("page_views"), get_queue("page_views"))

    def test_override_settings_gives_queues_of_the_new_settings(self) -> None:
        before = get_queue("page_views")
        queues = {"page_views": {"table": "pageviews_pageview", "key": "page", "name": "other"}}
        with self.settings(WRITEBEHIND={"QUEUES": queues}):
            during = get_queue("page_views")
            self.assertIsNot(during, before)
            self.assertEqual(during.name, "other")
        self.assertIsNot(get_queue("page_views"), during)
