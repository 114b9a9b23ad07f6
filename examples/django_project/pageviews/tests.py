"""Run by ``python manage.py test pageviews``, on Django's test database."""

from __future__ import annotations

from django.db import connection
from django.test import TransactionTestCase
from psycopg.conninfo import conninfo_to_dict

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

    def test_one_queue_per_process_writing_to_the_test_database(self) -> None:
        queue = get_queue("page_views")
        self.assertIs(get_queue("page_views"), queue)
        self.assertTrue(connection.settings_dict["NAME"].startswith("test_"))
        self.assertEqual(
            conninfo_to_dict(queue._sink._conninfo or "")["dbname"],  # type: ignore[attr-defined]
            connection.settings_dict["NAME"],
        )
